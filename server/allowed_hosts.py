"""``--allowed-hosts``: the Host header a request must carry (finding L11 of the
2026-12-07 review: any Host was served, which DNS rebinding turns into access from a
browser to a server on localhost or a private network).

Empty (the default): every host, as uvicorn and vLLM do. Otherwise each entry is a host
name or address, or ``*.example.com`` for its subdomains; the port is not compared. A
request with another Host (or none) gets the API's error JSON, 400, before its key or
body is read. Kubernetes probes send the pod IP as their Host: list it, or probe with a
``Host`` header (the chart's probes do not set one).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import send_error


def host_of(header: str) -> str:
    """The host of a Host header, lower case, without its port ("[::1]:80" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def allowed(host: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class HostAllowlist:
    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = [host_of(h) if not h.startswith("*") else h.lower() for h in hosts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hosts:
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not allowed(host_of(header), self.hosts):
                await send_error(
                    send,
                    "this server does not answer for that Host (see --allowed-hosts)",
                    "invalid_request_error",
                    400,
                )
                return
        await self.app(scope, receive, send)
