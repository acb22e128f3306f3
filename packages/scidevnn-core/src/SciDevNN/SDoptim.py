"""STUB: course interface (to be written)."""
