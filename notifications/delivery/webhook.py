"""Webhooks by the Standard Webhooks specification (https://www.standardwebhooks.com/)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from datetime import UTC, datetime

import httpx

from notifications.delivery.job import Job, Result
from notifications.netguard import refuse_private


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,` + base64 HMAC-SHA256 of "{id}.{timestamp}.{body}", keyed with the secret's
    bytes (the base64 after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def payload(job: Job) -> bytes:
    data = job.notification()
    body = {"type": job.event_type, "timestamp": data["created_at"], "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def _resolve(url: httpx.URL) -> tuple[str | None, str | None]:
    """(address to connect to, None) or (None, why it is refused). Checked at send time on
    the address actually used, so a name that resolves to a private address later (DNS
    rebinding) is refused too."""
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            return None, f"cannot resolve {host}: {exc.strerror or exc}"
        addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        return None, f"cannot resolve {host}"
    for address in addresses:
        reason = refuse_private(address)
        if reason is not None:
            return None, f"refused {host} ({address}): {reason}"
    return addresses[0], None


async def send(
    client: httpx.AsyncClient, job: Job, *, allow_private: bool, timeout: float
) -> Result:
    url_text = str(job.row["url"])
    secret = str(job.row["secret"])
    body = payload(job)
    timestamp = int(time.time())
    msg_id = str(job.id)  # the delivery id: the same on every retry, receivers de-duplicate on it
    headers = {
        "content-type": "application/json",
        "user-agent": "notifications-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    try:
        url = httpx.URL(url_text)
    except httpx.InvalidURL as exc:
        return Result("dead", error=f"invalid URL: {exc}")
    if url.scheme not in ("http", "https") or not url.host:
        return Result("dead", error="the URL must be http(s) with a host")
    extensions: dict[str, str] = {}
    try:
        # The whole send, look-up included, within the timeout: httpx's own timeout bounds
        # each read, and a receiver trickling a byte at a time would outlive the lease.
        async with asyncio.timeout(timeout):
            if not allow_private:
                address, refused = await _resolve(url)
                if address is None:
                    return Result("retry", error=refused)
                if address != url.host:
                    # Connect to the address checked above, not to whatever a second
                    # look-up says.
                    headers["host"] = url.netloc.decode("ascii")
                    if url.scheme == "https":
                        extensions["sni_hostname"] = url.host
                        # httpcore pools connections by address and port alone: a TLS
                        # connection opened (and its certificate checked) for one host must
                        # not carry another host's request to the same address.
                        headers["connection"] = "close"
                    url = url.copy_with(host=address)
            response = await client.post(
                url, content=body, headers=headers, timeout=timeout, extensions=extensions
            )
    except (httpx.TimeoutException, TimeoutError):
        return Result("retry", error=f"no answer within {timeout:g}s")
    except httpx.HTTPError as exc:
        return Result("retry", error=f"{type(exc).__name__}: {exc}"[:500])
    status = response.status_code
    if 200 <= status < 300:
        return Result("delivered", http_status=status)
    if status == 410:
        return Result("gone", http_status=status, error="410 Gone: endpoint disabled")
    reason = f"HTTP {status}"
    if 300 <= status < 400:
        reason += " (redirects are not followed)"
    return Result(
        "retry",
        http_status=status,
        error=reason,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )
