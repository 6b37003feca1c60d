"""Paths, settings and templates read from disk."""
