"""The cluster's Ray token: validated, written to an owner-only file, never logged."""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from edgellm.errors import InvalidRequest

# Ray's own generator (`ray get-auth-token --generate`) makes 32 random bytes as hex.
TOKEN_HEX_CHARS = 64
TOKEN_FILE_NAME = "auth_token"


@dataclass(frozen=True, repr=False)
class RayToken:
    value: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> RayToken:
        if len(text) != TOKEN_HEX_CHARS:
            raise InvalidRequest(
                f"token must be {TOKEN_HEX_CHARS} hex characters, got {len(text)} characters"
            )
        if any(c not in string.hexdigits for c in text):
            raise InvalidRequest("token must be hex characters only")
        return cls(text.lower())

    @classmethod
    def generate(cls) -> RayToken:
        return cls(secrets.token_hex(TOKEN_HEX_CHARS // 2))

    def __repr__(self) -> str:
        return "RayToken(<hidden>)"

    __str__ = __repr__

    def write(self, directory: Path) -> Path:
        """Write the token to an owner-only file for RAY_AUTH_TOKEN_PATH."""
        path = Path(directory) / TOKEN_FILE_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.value)
        return path

    def env(self, path: Path) -> dict[str, str]:
        """Environment that makes Ray processes use token authentication with this token."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}
