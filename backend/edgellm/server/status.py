"""Errors to gRPC status codes, and what this machine has (device, memory)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc

from edgellm.errors import (
    EdgeLLMError,
    FatalError,
    InvalidRequest,
    ModelNotFound,
    RequestCancelled,
)
from edgellm.server import fatal

log = logging.getLogger(__name__)

_CODES: tuple[tuple[type[EdgeLLMError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (RequestCancelled, grpc.StatusCode.CANCELLED),
    (FatalError, grpc.StatusCode.INTERNAL),
)


def status_code(exc: BaseException) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, EdgeLLMError):
        return grpc.StatusCode.UNAVAILABLE  # the other recoverable errors
    return grpc.StatusCode.INTERNAL


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, EdgeLLMError) else f"{type(exc).__name__}: {text}"


def abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    """End the RPC with the status code for `exc` (raises, as context.abort does)."""
    code = status_code(exc)
    if isinstance(exc, FatalError):
        fatal.report(one_line(exc))
    if code == grpc.StatusCode.INTERNAL:
        log.error("internal error", exc_info=exc)
    context.abort(code, one_line(exc))


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FatalError("device 'cuda' requested but torch sees no CUDA device")
    return device


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def memory(device: str) -> tuple[int, int]:
    """(total, free) bytes: the GPU's on CUDA, else system RAM (MemAvailable)."""
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        return int(total), int(free)
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        kib = {k: int(v.split()[0]) for k, v in fields.items() if k in ("MemTotal", "MemAvailable")}
        return kib["MemTotal"] * 1024, kib["MemAvailable"] * 1024
    except (OSError, KeyError, ValueError):
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
