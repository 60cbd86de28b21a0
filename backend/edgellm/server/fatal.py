"""Fatal errors met while serving (vLLM's engine core died): the request that met one
fails with it, then the server stops and exits 1, so the node's supervisor starts a fresh
backend and the next request works. A list, not an Event: the main thread polls it (see
app._wait_for_stop on why no lock may be taken there)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_reasons: list[str] = []


def report(reason: str) -> None:
    if not _reasons:
        log.error("fatal: %s; stopping so the supervisor restarts the backend", reason)
    _reasons.append(reason)


def reason() -> str | None:
    return _reasons[0] if _reasons else None
