"""Landmark accuracy metrics (NME and what is built on it)."""
