"""Serving: an inference engine on in-memory inputs, the HTTP app and its web page, export."""
