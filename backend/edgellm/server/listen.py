"""The one address check the backend makes before anything else: it listens on loopback or
a unix socket only (it has no authentication). Kept apart from app.py so that
`python -m edgellm.server` refuses a bad --listen at once, before the seconds of importing
torch and the services: the flag's error is one line, whatever the machine's speed."""

from __future__ import annotations

import ipaddress

from edgellm.errors import EdgeLLMError


def check_listen(listen: str) -> None:
    """Raise ListenRefused unless `listen` is unix:/abs/path or a loopback HOST:PORT."""
    if listen.startswith("unix:"):
        return
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ListenRefused(f"--listen {listen!r}: want unix:/abs/path.sock or 127.0.0.1:PORT")
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ListenRefused(
            f"--listen {listen!r}: the backend has no authentication and listens on "
            "loopback or a unix socket only (127.0.0.1:PORT, [::1]:PORT, unix:/abs/path.sock)"
        )


class ListenRefused(EdgeLLMError):
    """--listen names an address other users or machines could reach."""
