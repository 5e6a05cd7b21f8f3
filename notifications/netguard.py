"""Where a webhook may go: public addresses only (unless WEBHOOK_ALLOW_PRIVATE=1).

Shared by the API (checks a URL when it is registered) and the deliverer (checks the
address it is about to connect to, at every send: a name may resolve elsewhere later).
"""

from __future__ import annotations

import ipaddress


def refuse_private(host: str) -> str | None:
    """Why an IP address must not be a webhook's target, or None. A host that is not an IP
    address literal is not judged here (resolve it first)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "not a public unicast address"
    if not address.is_global:
        return "not a public address"
    return None
