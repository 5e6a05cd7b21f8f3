"""The listener daemon: turns scenario events into user notifications.

It never imports Flask; the API never fans out.
"""
