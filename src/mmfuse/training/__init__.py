"""Training loop, feature cache and checkpoint I/O."""
