"""Shared fixtures: the real embedded model, converted once into <repo>/.cache/models."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgellm.models.store import ModelStore

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".cache" / "models"
MODEL_ID = "smollm2-135m"


@pytest.fixture(scope="session", autouse=True)
def models_dir() -> Iterator[Path]:
    """Every test and every server subprocess shares this store (converted once)."""
    previous = os.environ.get("EDGELLM_MODELS_DIR")
    os.environ["EDGELLM_MODELS_DIR"] = str(MODELS_DIR)
    ModelStore(MODELS_DIR).ensure(MODEL_ID)
    yield MODELS_DIR
    if previous is None:
        os.environ.pop("EDGELLM_MODELS_DIR", None)
    else:
        os.environ["EDGELLM_MODELS_DIR"] = previous


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ray_cluster: starts Ray nodes; runs only in a loopback-only network namespace "
        "(make test runs these through scripts/in-netns.sh)",
    )


@pytest.fixture(scope="session")
def isolated_network() -> None:
    """Skip unless this process sees only loopback interfaces.

    Ray listens on every interface and replaces a loopback node address with the machine's
    routable one; in a namespace that has only `lo`, everything stays on 127.0.0.1.
    """
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        pytest.skip(f"Ray tests run only in a loopback-only network namespace (here: {names})")


@pytest.fixture(scope="session")
def store_dir(models_dir: Path) -> Path:
    return models_dir / MODEL_ID


class ServerProcess:
    """A real `python -m edgellm.server` on a unix socket, stopped by its own pid."""

    def __init__(self, socket: Path, log: Path, extra: list[str] | None = None) -> None:
        self.address = f"unix:{socket}"
        self.log = log
        cmd = [sys.executable, "-m", "edgellm.server", "--listen", self.address]
        cmd += ["--data-dir", str(socket.parent / "data"), *(extra or [])]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(self.address)

    def wait_serving(self, timeout: float = 120.0) -> None:
        """Poll grpc.health.v1 with backoff until SERVING."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-2000:]}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not SERVING:\n{self.log.read_text()[-2000:]}")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Leak check: the process we started is gone and reaped.
        assert self.proc.returncode is not None


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def start(*extra: str) -> ServerProcess:
        server = ServerProcess(
            tmp_path / f"s{len(started)}.sock", tmp_path / "server.log", list(extra)
        )
        started.append(server)
        server.wait_serving()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module; the model loads on its first request."""
    tmp = tmp_path_factory.mktemp("server")
    proc = ServerProcess(tmp / "s.sock", tmp / "server.log")
    try:
        proc.wait_serving()
        yield proc
    finally:
        proc.stop()
