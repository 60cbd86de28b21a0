"""Addresses: the interface a cluster binds to, free ports on it, head addresses."""

from __future__ import annotations

import ipaddress
import socket

from edgellm.errors import InvalidRequest


def bind_host(text: str) -> str:
    """An IP address of this machine that Ray may bind to (never the wildcard).

    Ray 2.60 replaces a loopback --node-ip-address with the machine's routable address
    (ray._private.services.resolve_ip_for_localhost); the address a node reports is the
    one to hand to others.
    """
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise InvalidRequest(f"bind_address must be an IP address, got {text!r}") from exc
    if ip.is_unspecified:
        raise InvalidRequest(f"bind_address {text!r} is a wildcard; name one interface")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((str(ip), 0))
    except OSError as exc:
        raise InvalidRequest(f"bind_address {text!r} is not an address of this machine") from exc
    return str(ip)


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports free on `host` right now (Ray binds them a moment later).
    Every socket stays bound until all are picked: one bound and closed at a time, the
    kernel can hand out the same port twice, and Ray refuses a command line that names
    one port for two of its components (seen in CI: object manager and dashboard agent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def head_address(text: str) -> str:
    """Validate "host:port" of a Ray head (GCS)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError as exc:
        raise InvalidRequest(f"head_address must be IP:PORT, got {text!r}") from exc
    if not sep or not 0 < number < 65536:
        raise InvalidRequest(f"head_address must be IP:PORT, got {text!r}")
    return text.strip()
