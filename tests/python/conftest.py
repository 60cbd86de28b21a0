"""Shared fixtures: the real embedded model, converted once into <repo>/.cache/models."""

from __future__ import annotations

import contextlib
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


# -- Kubo (IPFS) daemons ----------------------------------------------------------------

IPFS_BIN = Path(os.environ.get("EDGELLM_IPFS_BIN") or REPO / ".bin" / "ipfs")


class KuboDaemon:
    """A real `ipfs daemon` on loopback with its own temporary repo, stopped by its pid.

    `ipfs init --profile=test`: API, gateway and swarm on 127.0.0.1 port 0 (the kernel
    picks free ports; the API's lands in $IPFS_PATH/api), no bootstrap peers, no MDNS, no
    AutoConf/AutoTLS, so it never reaches outside the machine.
    """

    def __init__(self, repo: Path, unix: bool = False) -> None:
        """`unix`: API and gateway on unix sockets in the repository, as the node runs
        its own Kubo (internal/ipfs/sockets.go); `api`/`gateway` are then unix:/path."""
        self.repo = repo
        self.env = {**os.environ, "IPFS_PATH": str(repo)}
        subprocess.run(
            [str(IPFS_BIN), "init", "--profile=test", "-e"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.unix = unix
        if unix:
            for key, name in (("Addresses.API", "api.sock"), ("Addresses.Gateway", "gw.sock")):
                subprocess.run(
                    [str(IPFS_BIN), "config", key, f"/unix{repo / name}"],
                    env=self.env,
                    check=True,
                    capture_output=True,
                )
        self.log = repo.parent / f"{repo.name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(IPFS_BIN), "daemon"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.api = self._wait_api()
        # The test profile serves the gateway too, on a free port; Kubo writes its URL.
        gateway = repo / "gateway"
        deadline = time.monotonic() + 10
        while not gateway.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.gateway = gateway.read_text().strip() if gateway.is_file() else ""
        if unix:
            self.gateway = f"unix:{repo / 'gw.sock'}"
        ident = self.rpc("id")
        self.peer_id: str = ident["ID"]
        self.addrs: list[str] = [a for a in ident["Addresses"] if "/127.0.0.1/tcp/" in a]

    def _wait_api(self, timeout: float = 60.0) -> str:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ipfs daemon exited:\n{self.log.read_text()[-2000:]}")
            api_file = self.repo / "api"
            if api_file.is_file():
                parts = api_file.read_text().strip().split("/")
                url = (
                    f"unix:{self.repo / 'api.sock'}"
                    if self.unix
                    else f"http://{parts[2]}:{parts[4]}"
                )
                try:
                    if self._post(url, "id", {}, 2).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"ipfs daemon API not up:\n{self.log.read_text()[-2000:]}")

    @staticmethod
    def _post(api: str, command: str, params: dict, timeout: float):
        import httpx

        if api.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=api.removeprefix("unix:"))
            with httpx.Client(transport=transport) as client:
                return client.post(f"http://kubo/api/v0/{command}", params=params, timeout=timeout)
        return httpx.post(f"{api}/api/v0/{command}", params=params, timeout=timeout)

    def rpc(self, command: str, **params: str):
        reply = self._post(self.api, command, params, 30)
        reply.raise_for_status()
        return reply.json()

    def connect(self, other: KuboDaemon) -> None:
        self.rpc("swarm/connect", arg=f"{other.addrs[0]}/p2p/{other.peer_id}")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run the stock `ipfs` CLI against this daemon's repo."""
        return subprocess.run(
            [str(IPFS_BIN), *args], env=self.env, capture_output=True, check=True, timeout=60
        )

    def kill(self) -> None:
        """SIGKILL (Kubo gone mid-request)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.returncode is not None


def _require_ipfs() -> None:
    if not os.access(IPFS_BIN, os.X_OK):
        pytest.skip(f"no Kubo binary at {IPFS_BIN} (make setup builds it; or set EDGELLM_IPFS_BIN)")


@pytest.fixture
def start_kubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start Kubo daemons for one test; every one is stopped (by pid) afterwards."""
    _require_ipfs()
    started: list[KuboDaemon] = []

    def start(unix: bool = False) -> KuboDaemon:
        daemon = KuboDaemon(tmp_path_factory.mktemp("kubo") / "repo", unix)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="module")
def kubo_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KuboDaemon, KuboDaemon]]:
    """Two daemons connected to each other (swarm/connect), shared by a test module."""
    _require_ipfs()
    a = KuboDaemon(tmp_path_factory.mktemp("kubo-a") / "repo")
    try:
        b = KuboDaemon(tmp_path_factory.mktemp("kubo-b") / "repo")
    except BaseException:
        a.stop()
        raise
    try:
        b.connect(a)
        yield a, b
    finally:
        b.stop()
        a.stop()


# -- edgellm serve ----------------------------------------------------------------------

EDGELLM_BIN = REPO / "bin" / "edgellm"


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line or environment names `text` (every
    process a node starts carries its data directory in one of them)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            pids.append(int(proc.name))
    return pids


class ServeProcess:
    """A real `edgellm serve` on 127.0.0.1 (a free port it picks itself), stopped by pid.

    Its address comes from <data-dir>/run/serve.json, which serve writes once it
    listens; `wait_ready` then polls GET /ready until every served model is warm."""

    def __init__(self, data_dir: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir.parent / f"{data_dir.name}.serve.log"
        cmd = [str(EDGELLM_BIN), "--data-dir", str(data_dir), "serve"]
        cmd += ["--listen", "127.0.0.1:0", *flags]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        self.url = ""

    def wait_ready(self, timeout: float = 300.0) -> str:
        import json

        import httpx

        record = self.data_dir / "run" / "serve.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.log.read_text()[-3000:]}")
            if not self.url and record.is_file():
                with contextlib.suppress(ValueError, KeyError):  # being written
                    self.url = json.loads(record.read_text())["url"]
            if self.url:
                try:
                    if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                        return self.url
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"serve not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait; SIGKILL only past `timeout`. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def start_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start `edgellm serve` nodes for one test module; each is stopped afterwards and
    nothing it started may outlive it."""
    if not os.access(EDGELLM_BIN, os.X_OK):
        pytest.skip(f"no {EDGELLM_BIN} (make build)")
    started: list[ServeProcess] = []

    def start(*flags: str, env: dict[str, str] | None = None) -> ServeProcess:
        node = ServeProcess(tmp_path_factory.mktemp("serve") / "data", *flags, env=env)
        started.append(node)
        node.wait_ready()
        return node

    yield start
    for node in started:
        node.stop()
    for node in started:
        deadline = time.monotonic() + 30
        while processes_mentioning(str(node.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not processes_mentioning(str(node.data_dir)), f"left running: {node.data_dir}"
