"""Outputs: the coordinate table, overlay pictures (pure drawing), and overlay files (names and writing)."""
