"""One Ray node (head or worker) as a child process tree this backend owns.

`ray start --block` runs in a new session (start_new_session=True); readiness is Ray's
own address file in the node's temp dir; stopping signals every process of that session
by pid (see procs.py). It dies with this backend even when the backend is SIGKILLed: it
runs under launch.py's keeper, a subreaper with a parent-death signal that kills the
node's whole process tree (orphans included) when the backend dies, and the keeper is
spawned from one thread that lives as long as the process (the signal fires when the
spawning *thread* exits). Marks in every Ray process's environment let reap.py clear,
at the next start-up, whatever still escaped. The token reaches Ray through an owner-only
file named by RAY_AUTH_TOKEN_PATH, with RAY_AUTH_MODE=token; it is never put on a command
line or logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edgellm.cluster import procs
from edgellm.cluster.address import free_ports
from edgellm.cluster.ray_start import REGISTER_WAIT_S
from edgellm.cluster.reap import MARKER_ENV, OWNER_ENV, OWNER_FILE, TEMP_PREFIX, owner_id
from edgellm.cluster.token import RayToken
from edgellm.errors import ClusterError

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
PHASE_START = "starting ray"
ADDRESS_FILE = "ray_current_cluster"  # written by `ray start` once the node is up
# Ray's unix sockets live at <work_dir>/ray-XXXXXXXX/session_<date>_<time>_<pid>/sockets/
# plasma_store and must stay within 107 bytes, so a longer work_dir gets a /tmp dir.
MAX_TEMP_ROOT = 24
LOG_NAME = "ray-start.log"
# A node's raylet log, in Ray's session directory under the node's temp dir; how much of its
# end is read; and a line of it (glog: "[date time L pid tid] (raylet) file.cc:line:
# message", L the level: I, W, E for error, F for fatal).
RAYLET_LOG = Path("session_latest") / "logs" / "raylet.out"
RAYLET_TAIL_BYTES = 64 * 1024
_RAYLET_LINE = re.compile(r"^\[\S+ \S+ ([IWEF]) \d+ \d+\] (?:\(raylet\) )?(.*\S)")
# MARKER_ENV (the node's work_dir) and OWNER_ENV (this backend) are set in every Ray
# process of a node (workers inherit the raylet's environment), so procs.marked() can prove
# that nothing a node started is left, and reap.py can find what a dead backend left.
__all__ = ["MARKER_ENV", "NodeConfig", "RayNode"]
# The one thread that spawns `ray start`'s keeper: PR_SET_PDEATHSIG fires when the spawning thread
# exits, and this one (an executor's worker, which never idles out) lives as long as the
# process; a gRPC handler thread is not promised to.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-spawn")


# Ray's metrics exporter listens, without the cluster token, on every interface of a node
# whose address is not loopback; EdgeLLM reads none of it, so it is off (RayConfig's
# enable_metrics_collection, read by the raylet, which then starts its agent with
# --disable-metrics-collection). What still listens is listed in docs/architecture.md.
QUIET_ENV = {"RAY_enable_metrics_collection": "0"}
# `ray start --block` answers SIGTERM by draining its node first (Ray 2.60: asks the head's
# GCS to drain it, then waits, for up to RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S, 30 s by
# default, for Serve's proxies to quiesce). A cluster's teardown stops the head first, so the
# head's GCS is going or gone and the ask hangs: every node's stop waited out its grace
# (procs.TERM_GRACE_S) and ended in SIGKILL, 5 s for the head, then 5 s for the workers,
# after a cold split's answer. Nothing of EdgeLLM's drains (a stage's KV stores are waited
# for before the stop, manager._stop), so `ray start` exits on SIGTERM at once (_stop).
STOP_ENV = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
# Settings of the whole cluster, given to the head (`ray start --system-config`), which hands
# them to every node and driver that joins. Ray returns a task's result in its reply only up
# to max_direct_call_object_size (100 KiB by default) and puts anything larger in the
# executing node's object store, from which the owner then fetches it: a decode step's logits
# are 196 KiB a sequence (SmolLM2's 49,152-token vocabulary in fp32), so every token of a
# split took that detour from the last stage to the driver. Inline up to 2 MiB: a default
# batch of 8 such sequences (a larger vocabulary or batch still takes the store). The last
# stage's end to the next step's start went from 10 to 4.2-5 ms a token (two-stage split on
# two cores, medians of 60 steps). The price: a prefill's activations under 2 MiB (about
# 900 tokens of SmolLM2) now travel between stages through the driver, not node to node.
# Each node's object store (object_store_bytes) is faulted in when its raylet starts
# (MAP_POPULATE), not by the first large object: a P/D handoff's 72.7 MB of KV blocks are
# the first, on the path between the first token and the second, and on a cold cluster
# the prefill peer's put and the decode peer's take were about 80 and 70 ms slower for the
# page faults (two nodes on the 2-core machine). It costs each node that much once, at
# its start, and keeps the store's memory resident while the node runs.
SYSTEM_CONFIG = {"max_direct_call_object_size": 2 * 2**20, "preallocate_plasma_memory": True}
# OpenMP threads of a stage spin only briefly between parallel regions, then sleep. The
# stages of a split run one after another for a token, on the same cores when the peers
# share a machine: libgomp's default spin (300,000 rounds, milliseconds) kept the idle
# stage's threads busy while the other computed (a two-stage split decoded 12.3-12.4
# tokens/s spinning, 14.5-14.9 with OMP_WAIT_POLICY=PASSIVE). But sleeping at once, as
# PASSIVE does, wakes the threads for every one of a forward's many small regions: a
# prefill ran 1.6x slower (two 15-layer stage processes taking turns through a pipe, two
# cores, medians: 24 tokens 176-209 ms PASSIVE, 109-152 ms at 10,000 rounds; 8 tokens
# 146-157 against 81-112; a decode step 70-73 against 61-76). A bounded spin keeps a
# forward's regions back to back and still frees the cores between turns. 50,000 rounds
# did as well in that test; 10,000 is the shorter spin, so an idle stage frees the cores
# sooner (the swarm bench's split figures vary by more between runs on this machine than
# the two differ). A user's own GOMP_SPINCOUNT or OMP_WAIT_POLICY wins (stage_env).
STAGE_ENV_DEFAULTS = {"GOMP_SPINCOUNT": "10000"}
# Either says how OpenMP threads wait; libgomp takes GOMP_SPINCOUNT over OMP_WAIT_POLICY,
# so the default spin must not be added beside a user's wait policy.
_WAIT_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def stage_env(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with STAGE_ENV_DEFAULTS added unless it already says how threads wait."""
    if any(name in environ for name in _WAIT_SETTINGS):
        return dict(environ)
    return {**STAGE_ENV_DEFAULTS, **environ}


def _quiet(phase: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class NodeConfig:
    # IP of the interface the cluster uses (see address.bind_host).
    host: str
    # Where this node's temp dir goes; a short /tmp dir when this path is too long.
    work_dir: Path
    # None starts a head; "IP:PORT" of a head joins it as a worker.
    head_address: str | None = None
    # Custom resources, e.g. {"peer:12D3Koo...": 1}.
    resources: dict[str, float] | None = None
    # CPUs Ray may schedule on this node.
    num_cpus: int = 1
    # Object store size in bytes: activations, and a P/D handoff's KV blocks (up to
    # disaggregated.worker.DIRECT_MAX_BYTES).
    object_store_bytes: int = 128 * 1024 * 1024
    # Extra environment for every Ray process of the node (e.g. EDGELLM_MODELS_DIR).
    env: dict[str, str] | None = None
    # Seconds to wait for the node to come up.
    start_timeout_s: float = 120.0


# `ray start`'s words when its node's raylet did not register with the GCS in time
# (ray_start.REGISTER_WAIT_S): the start is tried once more. Why a raylet sometimes never
# registers (twice in fresh-clone CI runs, under load, while another node joined the same
# head) was not found: its log had no error line (see raylet_tail). A join should not fail
# on one stuck raylet, so a new one, on new ports, gets what is left of the start's time.
NOT_REGISTERED = "The current node timed out during startup"
START_ATTEMPTS = 2


class RayletNotRegistered(ClusterError):
    """A node's raylet did not register with the GCS in time."""


def _temp_root(work_dir: Path) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    if len(str(work_dir)) <= MAX_TEMP_ROOT:
        return Path(tempfile.mkdtemp(prefix="ray-", dir=work_dir))
    return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))


# Every Ray component's port, picked by us (all distinct: address.free_ports); a head's too.
PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)
HEAD_PORT_FLAGS = ("--port", "--ray-client-server-port")
# Ray components a cluster of EdgeLLM's has no use for, each a Python process importing Ray
# (about 80 MB and a second or more of CPU at every cold start, with the stage actors' own
# imports contending for the same cores): the log monitor streams worker logs to drivers,
# and the driver runs with log_to_driver=False (driver.py); the head's autoscaler monitor
# scales nothing in a cluster of named peers. Ray has no flag for the head's API server and
# client server, so ray_start.py leaves them out (UNUSED_HEAD_PROCESSES); the client server's
# port is still named, since `ray start` would otherwise fill in its fixed default, 10001.
UNUSED_COMPONENT_FLAGS = ("--include-log-monitor=false",)
UNUSED_HEAD_FLAGS = ("--no-monitor",)


def _command(config: NodeConfig, temp: Path) -> list[str]:
    host = config.host
    cmd = [sys.executable, "-m", "edgellm.cluster.ray_start", "start", "--block"]
    cmd += ["--node-ip-address", host, "--temp-dir", str(temp), "--disable-usage-stats"]
    cmd += ["--num-cpus", str(config.num_cpus), "--num-gpus", "0"]
    cmd += ["--object-store-memory", str(config.object_store_bytes)]
    cmd += ["--resources", json.dumps(config.resources or {})]
    cmd += ["--min-worker-port", "0", "--max-worker-port", "0"]
    head = config.head_address is None
    flags = [*PORT_FLAGS, *(HEAD_PORT_FLAGS if head else ())]
    for flag, port in zip(flags, free_ports(host, len(flags)), strict=True):
        cmd += [flag, str(port)]
    cmd += UNUSED_COMPONENT_FLAGS
    if head:
        cmd += ["--head", "--include-dashboard=false", *UNUSED_HEAD_FLAGS]
        cmd += ["--system-config", json.dumps(SYSTEM_CONFIG)]
    else:
        cmd += ["--address", config.head_address]
    return cmd


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "edgellm.cluster.launch", str(os.getpid()), "--"]
    with log_path.open("wb") as out:
        return subprocess.Popen(
            launcher + cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class RayNode:
    """A running Ray node; `stop()` ends every process it started."""

    def __init__(self, proc: subprocess.Popen, temp: Path, address: str) -> None:
        self.proc = proc
        self.temp = temp
        # GCS address of the cluster ("IP:PORT"), as Ray reports it.
        self.address = address

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(
        cls, config: NodeConfig, token: RayToken, progress: ProgressFn | None = None
    ) -> RayNode:
        """Start the node; once more, with new ports and a new temp dir, when its raylet
        never registered (START_ATTEMPTS), all within config.start_timeout_s."""
        progress = progress or _quiet
        progress(PHASE_START, 0, 1)
        started = time.monotonic()
        deadline = started + config.start_timeout_s
        role = "head" if config.head_address is None else "worker"
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                node = cls._start_once(config, token, deadline)
                break
            except RayletNotRegistered as exc:
                if attempt == START_ATTEMPTS or deadline - time.monotonic() < REGISTER_WAIT_S:
                    raise
                log.warning("ray %s: %s; starting it once more", role, exc)
        progress(PHASE_START, 1, 1)
        took = time.monotonic() - started
        log.info("ray %s up at %s (pid %d) in %.2fs", role, node.address, node.pid, took)
        return node

    @classmethod
    def _start_once(cls, config: NodeConfig, token: RayToken, deadline: float) -> RayNode:
        temp = _temp_root(config.work_dir)
        env = stage_env({**os.environ, **(config.env or {})})
        env.update(token.env(token.write(temp)))
        env[MARKER_ENV] = str(config.work_dir)
        env[OWNER_ENV] = owner = owner_id()
        (temp / OWNER_FILE).write_text(f"{owner}\n{config.work_dir}\n")
        env.pop("RAY_AUTH_TOKEN", None)  # the file is the one source of the token
        env.update(QUIET_ENV)
        env.update(STOP_ENV)
        proc = _SPAWNER.submit(_spawn, _command(config, temp), env, temp / LOG_NAME).result()
        try:
            address = _wait_ready(proc, temp, deadline)
        except BaseException:
            _stop(proc, temp)
            raise
        return cls(proc, temp, address)

    def members(self) -> list[int]:
        """Pids of this node's live processes."""
        return procs.session_members(self.proc.pid)

    def stop(self) -> None:
        _stop(self.proc, self.temp)


def _log_tail(temp: Path, limit: int = 1500) -> str:
    """The log's last line (a traceback's exception) first, then its tail, then what the
    raylet said went wrong: callers cut a long message short, and the last line is what
    says why."""
    try:
        text = (temp / LOG_NAME).read_text(errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in text[-limit:].splitlines() if line.strip()]
    parts = [f"{lines[-1]} (log: {' | '.join(lines[:-1])})"] if lines else []
    raylet = raylet_tail(temp)
    if raylet:
        parts.append(f"(raylet: {raylet})")
    return " ".join(parts)


def raylet_tail(temp: Path, count: int = 3) -> str:
    """The last `count` error lines of the node's raylet log, joined; without any, its last
    `count` lines ("last: ..."). When a raylet never registers, `ray start` says only that
    the node timed out during startup; the raylet's own log says why (a GCS it could not
    reach, a refused token) or how far it got, and it goes with the node's temp dir when
    the failed start is cleaned up."""
    try:
        with (temp / RAYLET_LOG).open("rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - RAYLET_TAIL_BYTES))
            tail = log_file.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [m.groups() for m in map(_RAYLET_LINE.match, tail.splitlines()) if m]
    errors = [text for level, text in lines if level in "EF"]
    if errors:
        return " | ".join(errors[-count:])
    return f"last: {' | '.join(text for _, text in lines[-count:])}" if lines else ""


def _wait_ready(proc: subprocess.Popen, temp: Path, deadline: float) -> str:
    timeout_s = deadline - time.monotonic()
    delay = 0.05
    address_file = temp / ADDRESS_FILE
    while True:
        if address_file.is_file():
            address = address_file.read_text().strip()
            if address:
                return address
        if proc.poll() is not None:
            tail = _log_tail(temp)
            error = RayletNotRegistered if NOT_REGISTERED in tail else ClusterError
            raise error(f"ray start exited with {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise ClusterError(f"ray node not up after {timeout_s:.0f}s: {_log_tail(temp)}")
        time.sleep(delay)
        # At most 0.1 s late: a cold split waits for the head, then for the joins, on the
        # first token's path (a head starts in 3-6 s; at 0.5 s a poll cost 0.25 s a node).
        delay = min(delay * 2, 0.1)


def _stop(proc: subprocess.Popen, temp: Path) -> None:
    # Ray's components get SIGKILL at once, the keeper and `ray start` SIGTERM. `ray start`
    # answers SIGTERM by stopping the components one after another, each with SIGTERM, a
    # 1 s wait and then SIGKILL, and the raylet and the GCS outlast the second here, so a
    # node's orderly stop was a SIGKILL after 2-2.5 s anyway (1.9-2.4 s a node, measured
    # per stop); nothing of a node outlives it (its temp dir goes next), and what a stage
    # still had to store was waited for before the stop (manager._stop). `ray start` then
    # finds its components gone and exits on its own, and the keeper with its status.
    launchers = {proc.pid, *procs.children(proc.pid)}
    left = procs.stop_session(proc.pid, spared=launchers)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        left.append(proc.pid)
    if left:
        log.error("ray processes survived SIGKILL: %s", left)
    token_file = temp / "auth_token"
    token_file.unlink(missing_ok=True)
    shutil.rmtree(temp, ignore_errors=True)
