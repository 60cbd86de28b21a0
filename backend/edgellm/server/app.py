"""Server lifecycle: bind, report health, stop on SIGTERM/SIGINT or when the parent dies."""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgellm import warm
from edgellm.cluster.manager import ClusterManager
from edgellm.config import BackendConfig
from edgellm.errors import FatalError
from edgellm.models.store import ModelStore
from edgellm.server import fatal
from edgellm.server.budget import model_memory_budget
from edgellm.server.cluster import ClusterControl
from edgellm.server.inference import InferenceService
from edgellm.server.kv import KVControl
from edgellm.server.listen import check_listen
from edgellm.server.model_control import ModelControl
from edgellm.server.models import ModelManager, RequestTracker
from edgellm.server.status import device_name, resolve_device
from edgellm.v1 import (
    cluster_control_pb2,
    cluster_control_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    kv_control_pb2,
    kv_control_pb2_grpc,
    model_control_pb2,
    model_control_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    "",
    inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name,
    model_control_pb2.DESCRIPTOR.services_by_name["ModelControl"].full_name,
    cluster_control_pb2.DESCRIPTOR.services_by_name["ClusterControl"].full_name,
    kv_control_pb2.DESCRIPTOR.services_by_name["KVControl"].full_name,
)
PARENT_POLL_S = 1.0
MAX_WORKERS = 16


@dataclass(frozen=True)
class ServeOptions:
    # "unix:/abs/path.sock" or "127.0.0.1:PORT".
    listen: str
    # Exit when this process is gone (None: never).
    parent_pid: int | None = None


# Decision (hardening): the server has no authentication; whoever reaches it loads
# models and starts Ray processes. It therefore listens only where this machine's own
# users reach it: a unix socket (0600, created here under a 0177 umask, in a directory
# made 0700 when missing) or a loopback TCP address. Any other --listen is refused
# before anything is built (exit 2).


def _prepare_socket(listen: str) -> Path | None:
    """For a unix address, remove a stale socket file left by a crashed server."""
    if not listen.startswith("unix:"):
        return None
    path = Path(listen.removeprefix("unix:").removeprefix("//"))
    if not path.is_absolute():
        raise FatalError(f"unix socket path must be absolute, got {listen!r}")
    if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
        path.unlink()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def parent_alive(pid: int) -> bool:
    """False once `pid` is gone or a zombie (dead but not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass
class Built:
    server: grpc.Server
    health: health.HealthServicer
    tracker: RequestTracker
    clusters: ClusterManager
    models: ModelManager


def build(config: BackendConfig, device: str) -> Built:
    store = ModelStore(config.models_dir)
    batch = {"max_batch": config.max_batch, "kv_budget_mb": config.kv_budget_mb}
    models = ModelManager(
        store,
        config.engine,
        device,
        config.calibrate,
        config.kv,
        **batch,
        memory_budget=model_memory_budget(config.model_memory_mb, device),
    )
    tracker = RequestTracker()
    clusters = ClusterManager(
        config.data_dir / "ray",
        config.models_dir,
        ipfs_api=config.kv.ipfs_api,
        ipfs_gateway=config.kv.ipfs_gateway,
        # Stages across peers run on the torch engine whatever this node's engine is:
        # vLLM's pipeline parallelism over Ray needs GPU peers and is not built yet.
        engine="torch",
        **batch,
        kv_dir=config.kv.dir,
        spot_check=config.kv.spot_check,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS))
    inference = InferenceService(models, tracker, clusters)
    inference_pb2_grpc.add_InferenceServicer_to_server(inference, server)
    model_control = ModelControl(models, tracker, device)
    model_control_pb2_grpc.add_ModelControlServicer_to_server(model_control, server)
    cluster_control = ClusterControl(clusters, models)
    cluster_control_pb2_grpc.add_ClusterControlServicer_to_server(cluster_control, server)
    kv_control_pb2_grpc.add_KVControlServicer_to_server(KVControl(models), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return Built(server, health_servicer, tracker, clusters, models)


def serve(config: BackendConfig, options: ServeOptions) -> int:
    check_listen(options.listen)
    warm.start()  # torch and transformers import while the services start and serve
    device = resolve_device(config.device)
    socket_path = _prepare_socket(options.listen)
    built = build(config, device)
    server, health_servicer, tracker = built.server, built.health, built.tracker
    old_umask = os.umask(0o177)  # the socket file is created 0600, never briefly wider
    try:
        bound = server.add_insecure_port(options.listen)
        if bound == 0 and socket_path is None:
            raise FatalError(f"cannot listen on {options.listen}")
        server.start()
    except RuntimeError as exc:
        raise FatalError(f"cannot listen on {options.listen}: {exc}") from exc
    finally:
        os.umask(old_umask)
    for name in SERVICE_NAMES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving on %s (device %s, models %s)",
        options.listen,
        device_name(device),
        config.models_dir,
    )
    reason = _wait_for_stop(options.parent_pid)
    log.info("stopping: %s", reason)
    health_servicer.enter_graceful_shutdown()
    server.stop(config.shutdown_grace_s).wait()
    tracker.abort_all()
    built.clusters.close()  # every Ray process this backend started, by pid
    built.models.close()  # every engine, and what each started
    if socket_path is not None:
        socket_path.unlink(missing_ok=True)
    return 1 if fatal.reason() is not None else 0


def _wait_for_stop(parent_pid: int | None) -> str:
    why: list[str] = []

    # The handler takes no lock: it runs in the main thread between two bytecodes, and
    # a threading.Event.set() there deadlocks when the main thread is inside that
    # Event's wait() holding its condition's lock (seen: a worker's backend that got
    # SIGTERM on its node's death hung and left its Ray node running). A signal cuts
    # the sleep short (its handler runs, then the loop checks `why`).
    def on_signal(signum: int, frame: object) -> None:
        why.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not why:
        if fatal.reason() is not None:
            return f"fatal error: {fatal.reason()}"
        if parent_pid is not None and not parent_alive(parent_pid):
            return f"parent process {parent_pid} is gone"
        time.sleep(PARENT_POLL_S)
    return why[0]
