"""The run layer: one input end to end (:mod:`.locate`), many inputs in order (:mod:`.batch`), one settings
object for all of them (:mod:`.settings`).
"""
