"""Whether a Ray cluster answers at a head's address (GCS or Ray Client) before Ray is asked to join it.

``ray.init`` retries an address where nothing listens 20 times, about 41 s each, before it raises; dagster-ray and
``ComputeResource.connect`` retry that again: a mistyped ``<head>:6379`` held every shard's run in resource set-up
for about 41 minutes, saying nothing. A ``ray://`` address where nothing listens took about 96 s, then was blamed on
a missing auth token. One TCP connection tells at once.
"""

from __future__ import annotations

import socket

DEFAULT_GCS_PORT = 6379  # what ``ray start --head`` listens on unless told otherwise
DEFAULT_CLIENT_PORT = 10001  # the head's Ray Client server (``ray start --head``, KubeRay's head service)
CLIENT_SCHEME = "ray://"
PROBE_TIMEOUT_S = 10.0


def is_client_address(address: str) -> bool:
    """A Ray Client address (``ray://...``), not a head's GCS address."""
    return address.strip().lower().startswith(CLIENT_SCHEME)


def head_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a GCS address (``10.0.0.5:6379``, ``head``, ``[fd00::5]:6379``) or a Ray Client address
    (``ray://head:10001``, ``ray://head``); None for the forms Ray resolves itself (``auto``, ``local``, another
    scheme) and for none."""
    address = address.strip()
    client = is_client_address(address)
    if client:
        address = address[len(CLIENT_SCHEME):].split("/", 1)[0]
    if not address or address in ("auto", "local") or "://" in address:
        return None
    default = DEFAULT_CLIENT_PORT if client else DEFAULT_GCS_PORT
    if address.startswith("["):  # IPv6, bracketed
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    if not port.isdigit():
        return (host, default) if not port else None  # a port Ray cannot read: its own error says so
    return host, int(port)


def unreachable(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why nothing answers at ``address``'s port (refused, no route, timed out, a host not found), or None
    where something does, or the address is not of those forms."""
    endpoint = head_endpoint(address)
    if endpoint is None:
        return None
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
