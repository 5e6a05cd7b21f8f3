"""Where a webhook may go: the address check shared by the API and the deliverer."""

from __future__ import annotations

import pytest

from notifications.netguard import refuse_private

REFUSED = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",  # cloud metadata
    "0.0.0.0",
    "::1",
    "[::1]",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
]
ALLOWED = ["93.184.216.34", "2606:4700:4700::1111", "2002:5db8:d822::"]


@pytest.mark.parametrize("host", REFUSED)
def test_private_and_embedded_private_addresses_are_refused(host: str) -> None:
    assert refuse_private(host) is not None


@pytest.mark.parametrize("host", ALLOWED)
def test_public_addresses_pass(host: str) -> None:
    assert refuse_private(host) is None


def test_a_name_is_not_judged_before_it_is_resolved() -> None:
    assert refuse_private("hooks.example.com") is None
