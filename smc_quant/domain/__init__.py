"""Immutable domain events shared by every layer (no I/O, no venue field names)."""
