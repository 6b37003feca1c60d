"""Frozen data and validation rules; no I/O."""
