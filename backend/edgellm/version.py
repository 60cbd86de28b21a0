"""The backend's version, from the installed distribution's metadata."""

from __future__ import annotations

from importlib import metadata


def backend_version() -> str:
    try:
        return metadata.version("edgellm")
    except metadata.PackageNotFoundError:
        return "0+unknown"
