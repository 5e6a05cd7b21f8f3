"""Settings.from_env: the one place configuration is read, and its refusals."""

from __future__ import annotations

import pytest

from notifications.config import ConfigError, Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.poll_interval == 2.0
    assert settings.batch_size == 100
    assert settings.listener_metrics_port is None


def test_values_are_read() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://db/x",
            "POLL_INTERVAL": "0.25",
            "BATCH_SIZE": "500",
            "LISTENER_METRICS_PORT": "9100",
            "LISTENER_METRICS_ADDR": "0.0.0.0",
            "LOG_FORMAT": "JSON",
        }
    )
    assert (settings.poll_interval, settings.batch_size) == (0.25, 500)
    assert (settings.listener_metrics_port, settings.listener_metrics_addr) == (9100, "0.0.0.0")
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_INTERVAL", "nan"),
        ("POLL_INTERVAL", "inf"),
        ("POLL_INTERVAL", "-1"),
        ("POLL_INTERVAL", "0"),
        ("POLL_INTERVAL", "soon"),
        ("BATCH_SIZE", "99999999999"),
        ("BATCH_SIZE", "1.5"),
        ("LISTENER_METRICS_PORT", "70000"),
        ("MAX_BODY_BYTES", "0"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_are_one_line_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)
    assert "\n" not in str(info.value)
