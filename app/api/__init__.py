"""The JSON API under /api/v1 (see docs/api.md)."""

from app.api.routes import api, bp

__all__ = ["api", "bp"]
