"""Inputs: readers (a path -> an array and its axis letters), axis letters, and expanding INPUT arguments."""

from .readers import SUFFIXES, is_supported, read

__all__ = ["SUFFIXES", "is_supported", "read"]
