"""Model inputs for rows: per-modality sources (cached features or raw inputs), the on-disk
feature cache, and the loaders that batch them."""
