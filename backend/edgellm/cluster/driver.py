"""This process as the cluster's Ray driver (one cluster per process: Ray's own rule).

Ray's C++ side reads the auth mode and token from the environment, so connecting sets
RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH here, and disconnecting restores them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from edgellm.errors import ClusterError

log = logging.getLogger(__name__)

_ENV_KEYS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")


class Driver:
    def __init__(self) -> None:
        self._saved: dict[str, str | None] | None = None
        self.address: str | None = None

    @property
    def connected(self) -> bool:
        return self.address is not None

    def connect(self, address: str, token_env: dict[str, str], temp_dir: Path) -> None:
        """Attach to the cluster at `address` through the local node in `temp_dir`."""
        if self.connected:
            raise ClusterError(f"already the driver of the cluster at {self.address}")
        self._saved = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ.update(token_env)
        _reset_ray_auth_cache()
        try:
            ray.init(
                address=address,
                _temp_dir=str(temp_dir),
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
            )
        except (RuntimeError, ConnectionError, ValueError, ray.exceptions.RayError) as exc:
            self._restore()
            raise ClusterError(f"cannot connect to the cluster at {address}: {exc}") from exc
        self.address = address

    def disconnect(self) -> None:
        if not self.connected:
            return
        ray.shutdown()
        self.address = None
        self._restore()

    def _restore(self) -> None:
        for key, value in (self._saved or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = None
        _reset_ray_auth_cache()


def _reset_ray_auth_cache() -> None:
    """Ray caches the auth mode and token per process; make it re-read the environment."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
