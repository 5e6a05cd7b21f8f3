"""Notification service for a test management product."""

__version__ = "0.1.0"
