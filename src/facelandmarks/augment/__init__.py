"""Landmark-aware augmentation of training crops and the ``augment`` stage."""
