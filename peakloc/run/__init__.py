"""The run layer: one input end to end, many inputs in order, one settings object for all of them.

:mod:`.locate` takes one input, :mod:`.batch` many, :mod:`.settings` holds what the run asks of each.
"""
