"""Readers for landmark annotation formats and images."""
