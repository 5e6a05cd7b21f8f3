"""The daemons' Prometheus port: opened for the run, closed after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import start_http_server

from notifications.config import ConfigError


@contextlib.contextmanager
def metrics_port(port: int | None, addr: str, variable: str) -> Iterator[None]:
    """Serve /metrics on addr:port while the block runs; nothing when port is None.

    Loopback by default (the daemons' *_METRICS_ADDR): an unauthenticated HTTP port should
    not face the network; a Prometheus on another host scrapes it through a tunnel or proxy.
    A port that cannot be bound is a one-line error naming the variable.
    """
    if not port:
        yield
        return
    try:
        server, _thread = start_http_server(port, addr=addr)
    except OSError as exc:
        raise ConfigError(f"{variable} {port}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
