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
    if isinstance(address, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address are judged by it: mapped (::ffff:a.b.c.d),
        # 6to4 (2002:AABB:CCDD::, routed to a.b.c.d where a 6to4 relay is reachable) and
        # Teredo (whose client address is the one reached).
        teredo = address.teredo
        embedded = address.ipv4_mapped or address.sixtofour or (teredo[1] if teredo else None)
        if embedded is not None:
            return refuse_private(str(embedded))
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
