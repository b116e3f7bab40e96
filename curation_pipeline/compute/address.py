"""Whether a Ray cluster answers at a head's address (GCS or Ray Client) before Ray is asked to join it.

``ray.init`` retries an address where nothing listens 20 times, about 41 s each, before it raises; dagster-ray and
``ComputeResource.connect`` retry that again: a mistyped ``<head>:6379`` held every shard's run in resource set-up
for about 41 minutes, saying nothing. A ``ray://`` address where nothing listens took about 96 s, then was blamed on
a missing auth token. One TCP connection tells at once; and since both listen as gRPC servers (HTTP/2 in the clear
unless ``RAY_USE_TLS``), one HTTP/2 greeting tells a port where something else answers (the dashboard's 8265, a
Redis, a silent listener), which held the run in set-up for half an hour or more.
"""

from __future__ import annotations

import os
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


# an HTTP/2 client's connection preface and an empty SETTINGS frame: a gRPC server answers with its own SETTINGS
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_H2_SETTINGS = 4


def unreachable(address: str, timeout_s: float | None = None) -> str | None:
    """Why no Ray cluster answers at ``address``'s port: nothing does (refused, no route, timed out, a host not
    found), or something that is no gRPC server (what it answered, if anything); None where a gRPC server does,
    or the address is not of those forms."""
    endpoint = head_endpoint(address)
    if endpoint is None:
        return None
    try:
        conn = socket.create_connection(endpoint, timeout=PROBE_TIMEOUT_S if timeout_s is None else timeout_s)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    with conn:
        if _truthy(os.environ.get("RAY_USE_TLS")):  # a TLS handshake first: the port answering is all told
            return None
        reply = b""
        try:
            conn.sendall(_H2_PREFACE)
            while len(reply) < 9:
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            return _not_ray(endpoint, "it took the connection but answered nothing")
        except OSError:  # reset: it closed the connection on the greeting
            pass
        if len(reply) == 9 and reply[3] != _H2_SETTINGS:  # the rest of its first line, to say what it is
            try:
                conn.settimeout(1.0)
                reply += conn.recv(120)
            except OSError:
                pass
    if len(reply) == 9 and reply[3] == _H2_SETTINGS:
        return None
    said = reply.split(b"\r\n", 1)[0].decode("ascii", "replace").strip() if reply else ""
    return _not_ray(endpoint, f"it answered {said!r}" if said else "it closed the connection")


def _not_ray(endpoint: tuple[str, int], what: str) -> str:
    return (f"something listens at port {endpoint[1]}, but not Ray's GCS or Ray Client server ({what}): the dashboard "
            f"is 8265, the GCS {DEFAULT_GCS_PORT} (a bare head address), Ray Client {DEFAULT_CLIENT_PORT} (ray://)")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
