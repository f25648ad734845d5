"""Data sets: formats, the annotation table, splits, validation, download."""
