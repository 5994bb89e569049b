"""Manifests, validation, built-in datasets, image transforms, vocabularies and splits."""
