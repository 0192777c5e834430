"""Pure array operations: argmax and soft-argmax, peaks, smoothing, sub-pixel methods, shared helpers.

No files, no options: arrays in, arrays out. :mod:`peakloc.backends` does the per-array-type work of
:mod:`.coords`; the rest is NumPy.
"""
