"""Tabular encoders: the numeric and categorical columns of a row as one modality."""
