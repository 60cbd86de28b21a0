"""Figures for split (pipeline) inference across two local workers, on the real path.

The swarm part runs the built bin/edgellm as scripts/demo.sh does: `swarm init`, two
`worker` processes with their own data dirs on 127.0.0.1, `peers` until both are listed,
then `infer --stages 2`. Ray listens on every interface, so that part always runs inside a
loopback-only network namespace (scripts/in-netns.sh re-running this file with --swarm);
with no namespace (not root, no iproute2) the provider raises instead of touching the real
network. Everything the swarm part starts is stopped by pid.

- cold_ttft_s: wall time from launching a cold `infer --stages 2` (discover, plan, Ray head,
  workers join, prefill) to the first byte of its streamed answer on stdout, once both
  workers have shared their model over IPFS (a worker's one-time work after it joins, not
  the cluster's); baseline is the single-process torch engine's TTFT on the same prompt
  (model already loaded).
- pipeline_decode_ratio: decode tokens/s that `infer --session ID --json` over a two-stage
  session reports for DECODE_TOKENS new tokens, over plain transformers `generate` decode
  tokens/s (greedy, same chat-templated prompt, same number of new tokens) in the namespace
  process, the two alternating REPEATS times (medians; the slow end beside them). The
  one-shot `infer --json --stages 2` rate and its after-the-swarm baseline are parts.
- warm_session_ttft_ratio: `session open --stages 2` over the same two workers, one warm-up
  request (discarded, its own prompt), then for each of SESSION_PROMPTS an
  `infer --session ID --json` and, just before and just after it, the single-process torch
  engine (loaded in the namespace process, warmed up) on the same prompt, the faster of the
  two counting: taken seconds apart, so a busy machine slows both sides alike. The figure
  is the median session ttft_ms (the head backend's request-received-to-first-token, as
  the engine measures its own) over the median engine TTFT; the per-pair ratios are
  recorded too. Each measured prompt is distinct and the engine skips its prefix cache
  where it has one, so neither side answers from a cached prompt. Also recorded: the
  client-side time from launching `infer --session` to its first streamed byte (process
  start, socket, prefill), next to cold_ttft_s's launch-to-first-byte of a one-shot infer.
  The workers republish their records every 2 s (--refresh) so that a worker freed by one
  request is seen free by the next.
- pd_handoff_share: on the same two workers, PD_REPEATS one-shot `infer --json
  --prefill-peer A --decode-peer B` over a distinct ~1,500-token prompt each (about 72 MB
  of fp32 KV), each followed by the single-process torch engine's TTFT on the same prompt
  (its full prefill, in the namespace process). What the handoff puts between the first
  token and the second, P's part (encoding the blocks and handing their bytes over:
  kv_store_ms) plus D's (taking them, verifying each by CID and its contents, importing:
  kv_fetch_ms), over the prefill: medians, each run's parts beside them. Storing the
  blocks in P's Kubo runs beside the decode and is not on that path.
- split_prefix_cache_ttft_speedup: on the same warm two-stage session, PREFIX_REPEATS
  pairs of requests sharing a ~1,500-token prefix (a fresh prefix per pair): the first
  computes it (and each stage stores its layers' blocks), the second, a few seconds later,
  takes the prefix from the stages' stores and computes only its own question. The figure
  is the median of the first's ttft_ms over the second's (the head backend's
  request-to-first-token); the cached prompt tokens are recorded with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / "bin" / "edgellm"
IN_NETNS = REPO / "scripts" / "in-netns.sh"
PROMPT = "Write a short story about a lighthouse keeper."
MAX_TOKENS = 24
REPEATS = 3
# pipeline_decode_ratio: new tokens per measured run (the session and the baseline).
DECODE_TOKENS = 64
# warm_session_ttft_ratio: a warm-up prompt, then distinct measured prompts.
WARMUP_PROMPT = "Say hello to the lighthouse keeper."
SESSION_PROMPTS = (  # seven: a stage's prefill on a shared machine varies by half between runs
    "Write a short story about a lighthouse keeper.",
    "Write a short poem about a fishing boat at dawn.",
    "Describe a quiet harbour town in winter.",
    "Explain how a tide table is read.",
    "List three things a ferry captain checks before leaving port.",
    "Write a letter from a sailor to his sister.",
    "Describe the sound of a storm reaching the coast.",
)
WALL_PROMPT = "Write a haiku about a lighthouse."  # the client-side first-byte timing
# split_prefix_cache_ttft_speedup: pairs of prompts sharing a ~1,500-token prefix.
PREFIX_REPEATS = 3
PREFIX_LINES = 40  # ~37 tokens a line
PREFIX_STORE_WAIT_S = 3.0  # the stages store a prompt's blocks in the background
# pd_handoff_share: cold P/D one-shot infers over distinct ~1,500-token prompts.
PD_REPEATS = 3
PD_MAX_TOKENS = 4
BUSY_RETRY_S = 90
SWARM_DEADLINE_S = 900  # the in-namespace part gives up (and cleans up) after this
OUTER_TIMEOUT_S = 960
STOP_GRACE_S = 30


# ---------------------------------------------------------------- in the namespace


class _Swarm:
    """Processes started by the swarm part; stop() ends exactly these, by pid."""

    def __init__(self, work: Path, deadline: float) -> None:
        self.work = work
        self.deadline = deadline
        self.procs: list[subprocess.Popen] = []
        self.join = ""
        self.session = ""  # an open session's id, closed before the workers stop

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"swarm part ran past {SWARM_DEADLINE_S}s")
        return left

    def run(self, name: str, *args: str, timeout: float | None = None) -> str:
        log = self.work / f"{name}.log"
        with log.open("ab") as err:
            done = subprocess.run(
                [str(BIN), "--data-dir", str(self.work / name), *args],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=min(timeout or self.left(), self.left()),
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"edgellm {args[0]} exited {done.returncode}: {log.read_text()}")
        return done.stdout

    def start_worker(self, name: str, *extra: str) -> dict[str, Any]:
        data = self.work / name
        data.mkdir()
        log = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [str(BIN), "--data-dir", str(data), "worker", "--no-mdns", "--join", self.join]
            + ["--listen", "/ip4/127.0.0.1/tcp/0", "--label", f"bench-{name}", *extra]
            # Info lines on stderr: `shared` waits for the model's "shared over IPFS" line.
            + ["--log-level", "info"]
            # Republish the record (and so its load) every 2 s, as the tests do: with the
            # default minute, a worker still looks busy long after a request left it.
            + ["--refresh", "2s", "--record-ttl", "6s"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.procs.append(proc)
        info = data / "worker.json"
        while not (info.exists() and info.stat().st_size):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"worker {name} exited: {(self.work / f'{name}.log').read_text()}"
                )
            self.left()
            time.sleep(0.2)  # polls a condition: the worker writes worker.json once joined
        time.sleep(0.1)  # written in one go, but let a partial write finish
        return json.loads(info.read_text())

    def shared(self, names: list[str]) -> None:
        """Wait until each worker has shared its model over IPFS (or said why not): a
        worker adds its weights to its Kubo once, in the background, just after it joins,
        hashing every byte. A cold cluster measured during that measures the share too,
        which a volunteer's worker, up for minutes before a request comes, has long done."""
        logs = [self.work / f"{name}.log" for name in names]
        while not all("shared over IPFS" in log.read_text(errors="replace") for log in logs):
            self.left()
            time.sleep(0.2)  # polls a condition: the workers log the share when it ends

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _has_field(cls: type, name: str) -> bool:
    import dataclasses

    return dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}


def _cold_streamed_infer(swarm: _Swarm, common: list[str]) -> tuple[float, str]:
    """(seconds from launch to first stdout byte, whole answer) for one cold infer."""
    log = (swarm.work / "infer-stream.log").open("wb")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN), "--data-dir", str(swarm.work / "requester"), "infer", *common, PROMPT],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    swarm.procs.append(proc)
    assert proc.stdout is not None
    first = proc.stdout.read(1)  # blocks until the first streamed byte (or EOF)
    ttft = time.perf_counter() - start
    rest = proc.stdout.read()
    code = proc.wait(timeout=swarm.left())
    if code != 0 or not first:
        raise RuntimeError(
            f"streamed infer exited {code}: {(swarm.work / 'infer-stream.log').read_text()}"
        )
    return ttft, (first + rest).decode(errors="replace")


def _open_session(swarm: _Swarm, common: list[str]) -> str:
    """`session open` over the swarm; returns the session id (the daemon is detached).

    A worker republishes its capability record (with its load) only every refresh
    interval (a minute by default), so right after the one-shot infers above the workers
    may still look busy: open is retried while it fails because a worker is busy ("all
    providers busy", or too few workers "within the limits") or unavailable (exit 4, e.g.
    a worker's `ray start` failing on an overloaded machine), for up to BUSY_RETRY_S."""
    until = time.monotonic() + BUSY_RETRY_S
    while True:
        try:
            sid = swarm.run("requester", "session", "open", *common).strip()
            break
        except RuntimeError as exc:
            text = str(exc)
            transient = "busy" in text or "within the limits" in text or "exited 4" in text
            if not transient or time.monotonic() > until:
                raise
            time.sleep(5)  # polls a condition: the workers' next record shows them free
    if len(sid) != 32:
        raise RuntimeError(f"session open printed {sid!r}")
    swarm.session = sid
    return sid


def _close_session(swarm: _Swarm) -> None:
    """`session close`; if that fails, SIGTERM the daemon named by the session's record
    (checking its command line names the session) and wait for it to tear down."""
    sid, swarm.session = swarm.session, ""
    if not sid:
        return
    try:
        swarm.run("requester", "session", "close", sid, timeout=120)
        return
    except Exception as exc:  # noqa: BLE001 - fall back to the daemon's pid
        print(f"pipeline: session close failed: {exc}", file=sys.stderr)
    record = swarm.work / "requester" / "sessions" / f"{sid}.json"
    try:
        pid = int(json.loads(record.read_text())["pid"])
        if sid.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)  # polls a condition: the daemon exits once its cluster is down


def _session_streamed_ttft(swarm: _Swarm, sid: str, prompt: str) -> float:
    """Seconds from launching `infer --session` to its first streamed stdout byte."""
    log = (swarm.work / "session-stream.log").open("ab")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN), "--data-dir", str(swarm.work / "requester"), "infer", "--session", sid]
        + ["--max-tokens", str(MAX_TOKENS), prompt],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    swarm.procs.append(proc)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    ttft = time.perf_counter() - start
    proc.stdout.read()
    code = proc.wait(timeout=swarm.left())
    if code != 0 or not first:
        raise RuntimeError(
            f"infer --session exited {code}: {(swarm.work / 'session-stream.log').read_text()}"
        )
    return ttft


def _engine_ttft(store_dir: Path) -> tuple[Callable[[str], float], bool]:
    """The single-process torch engine, loaded and warmed up: (prompt -> TTFT in ms,
    whether it skips its prefix cache)."""
    from edgellm.engine.base import EngineConfig
    from edgellm.engine.registry import engine_class
    from edgellm.engine.types import GenerationRequest, SamplingParams

    engine = engine_class("torch").load(EngineConfig(store_dir))
    uncached = {"no_prefix_cache": True} if _has_field(GenerationRequest, "no_prefix_cache") else {}

    def ttft_ms(prompt: str) -> float:
        request = GenerationRequest("bench", prompt=prompt, sampling=SamplingParams(1), **uncached)
        return list(engine.generate(request))[-1].timings.ttft_ms

    for _ in range(REPEATS):  # warm-up: the first forward passes after a load are slow
        ttft_ms(WARMUP_PROMPT)
    return ttft_ms, bool(uncached)


def _pd_handoff(
    swarm: _Swarm, net: list[str], peers: tuple[str, str], engine_ttft_ms: Callable[[str], float]
) -> dict[str, Any]:
    """P/D one-shot infers (prefill on peers[0], decode on peers[1]), each followed by the
    engine's full prefill of the same prompt: per run, the answer's KV parts and the
    engine's TTFT."""
    ask = ["infer", "--json", *net, "--prefill-peer", peers[0], "--decode-peer", peers[1]]
    ask += ["--max-tokens", str(PD_MAX_TOKENS)]
    runs = []
    for run in range(PD_REPEATS):
        prompt = _long_prefix(100 + run) + "Which boat met buoy 7?"
        answer = json.loads(swarm.run("requester", *ask, prompt))
        if answer.get("mode") != "pd":
            raise RuntimeError(f"--prefill-peer/--decode-peer ran as {answer.get('mode')!r}")
        runs.append(
            {
                "kv_store_ms": answer["kv_store_ms"],
                "kv_fetch_ms": answer["kv_fetch_ms"],
                "ttft_ms": answer["ttft_ms"],
                "prompt_tokens": answer["prompt_tokens"],
                "cached_prompt_tokens": answer["cached_prompt_tokens"],
                "engine_prefill_ms": engine_ttft_ms(prompt),
            }
        )
    return {"runs": runs}


def _warm_session(
    swarm: _Swarm, net: list[str], store_dir: Path, engine: tuple[Callable[[str], float], bool]
) -> dict[str, Any]:
    """Open a session over the two workers, warm it up, then per prompt the session's TTFT
    and the local engine's."""
    engine_ttft_ms, uncached = engine
    started = time.monotonic()
    sid = _open_session(swarm, [*net, "--stages", "2"])
    open_s = time.monotonic() - started
    ask = ["infer", "--session", sid, "--json", "--max-tokens", str(MAX_TOKENS)]
    swarm.run("requester", *ask, WARMUP_PROMPT)  # warm-up, discarded
    answers, engine_ms = [], []
    for prompt in SESSION_PROMPTS:
        # The engine just before and just after the session request; the faster of the
        # two is the baseline (a conservative ratio on a machine whose load varies).
        before = engine_ttft_ms(prompt)
        answers.append(json.loads(swarm.run("requester", *ask, prompt)))
        engine_ms.append(min(before, engine_ttft_ms(prompt)))
    wall = _session_streamed_ttft(swarm, sid, WALL_PROMPT)
    decode = _interleaved_decode(swarm, sid, store_dir)
    prefix = _prefix_cache_pairs(swarm, ask)
    _close_session(swarm)
    import torch

    return {
        # The machine's state while measuring: on a shared, overloaded machine torch's
        # threads oversubscribe the cores and the figure says more about that than about
        # sessions.
        "load_avg_1m": os.getloadavg()[0],
        "engine_torch_threads": torch.get_num_threads(),
        "open_s": open_s,
        "ttft_ms": [a["ttft_ms"] for a in answers],
        "engine_ttft_ms": engine_ms,
        "engine_skips_prefix_cache": uncached,
        "prompt_tokens": [a["prompt_tokens"] for a in answers],
        # Leading tokens the stages took from their stores (the chat template's blocks,
        # stored by the requests before), and what taking them cost.
        "cached_prompt_tokens": [a.get("cached_prompt_tokens", 0) for a in answers],
        "kv_fetch_ms": [a.get("kv_fetch_ms", 0.0) for a in answers],
        "stages": len(answers[0].get("stages") or []),
        "wall_ttft_s": wall,
        "decode": decode,
        "prefix": prefix,
    }


def _interleaved_decode(swarm: _Swarm, sid: str, store_dir: Path) -> dict[str, Any]:
    """Decode tokens/s of the open two-stage session and of transformers `generate` in this
    process, DECODE_TOKENS new tokens each, greedy, alternating REPEATS times so that the
    machine's load hits both alike. The split side is what the backend reports (decode
    only); the baseline is an N-token run minus a 1-token run."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgellm.engine.base import EngineConfig
    from edgellm.engine.registry import engine_class
    from edgellm.engine.types import GenerationRequest

    # The prompt's ids as the engine builds them (chat template included).
    engine = engine_class("torch").load(EngineConfig(store_dir))
    ids = torch.tensor([engine.prepare(GenerationRequest("x", prompt=PROMPT)).prompt_ids])
    engine.close()
    model = AutoModelForCausalLM.from_pretrained(store_dir).eval()

    def generate(n: int) -> tuple[float, list[int]]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n
            )
        return time.perf_counter() - start, out[0, ids.shape[1] :].tolist()

    ask = ["infer", "--session", sid, "--json", "--max-tokens", str(DECODE_TOKENS), PROMPT]
    generate(4)  # warm-up
    split, base, same = [], [], []
    for _ in range(REPEATS):
        answer = json.loads(swarm.run("requester", *ask))
        split.append(float(answer["tokens_per_s"]))
        t1, _ = generate(1)
        tn, tokens = generate(len(answer["token_ids"]))
        base.append((len(tokens) - 1) / (tn - t1) if len(tokens) > 1 and tn > t1 else 0.0)
        same.append(answer["token_ids"] == tokens)
    return {
        "split_tok_s": split,
        "generate_tok_s": base,
        "tokens": len(answer["token_ids"]),
        "same_tokens": all(same),
        "torch_threads": torch.get_num_threads(),
    }


def _long_prefix(run: int) -> str:
    lines = [f"Harbour office archive {run}, ledger of the night shift."]
    lines += [
        f"Entry {i}: the pilot boat {chr(65 + i % 26)}-{run} met a freighter at buoy {i + 3} "
        f"and guided it past the breakwater before {i % 12 + 1} o'clock."
        for i in range(PREFIX_LINES)
    ]
    return "\n".join(lines) + "\n\n"


def _prefix_cache_pairs(swarm: _Swarm, ask: list[str]) -> dict[str, Any]:
    """Per pair: (uncached ttft_ms, cached ttft_ms, cached prompt tokens)."""
    cold, warm, cached, prompt_tokens = [], [], [], []
    for run in range(PREFIX_REPEATS):
        prefix = _long_prefix(run)
        first = json.loads(swarm.run("requester", *ask, prefix + "Which boat met buoy 7?"))
        time.sleep(PREFIX_STORE_WAIT_S)  # let the stages' background stores finish
        second = json.loads(swarm.run("requester", *ask, prefix + "When did entry 9 end?"))
        cold.append(first["ttft_ms"])
        warm.append(second["ttft_ms"])
        cached.append(second.get("cached_prompt_tokens", 0))
        prompt_tokens.append(second["prompt_tokens"])
    return {
        "uncached_ttft_ms": cold,
        "cached_ttft_ms": warm,
        "cached_prompt_tokens": cached,
        "prompt_tokens": prompt_tokens,
    }


def swarm_main(store_dir: Path) -> int:
    """Run inside the namespace: print one JSON object with the swarm measurements."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    interfaces = sorted(os.listdir("/sys/class/net"))
    if interfaces != ["lo"]:
        sys.exit(f"pipeline: refusing to start Ray outside a loopback-only namespace: {interfaces}")
    work = Path(tempfile.mkdtemp(prefix="edgellm-bench-pipeline."))
    swarm = _Swarm(work, time.monotonic() + SWARM_DEADLINE_S)
    try:
        swarm.join = swarm.run("swarm", "swarm", "init").strip()
        started = time.monotonic()
        a = swarm.start_worker("a")
        boot = a["addrs"][0]
        b = swarm.start_worker("b", "--bootstrap", boot)
        workers_s = time.monotonic() - started
        swarm.shared(["a", "b"])
        shared_s = time.monotonic() - started
        net = ["--join", swarm.join, "--no-mdns", "--bootstrap", boot]
        for _ in range(6):
            peers = swarm.run("requester", "peers", "--json", *net, "--timeout", "5s")
            if len(json.loads(peers)) >= 2:
                break
        else:
            raise RuntimeError("the swarm never listed both workers")
        common = [*net, "--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1"]
        common += ["--stages", "2", "--max-tokens", str(MAX_TOKENS)]
        cold_ttft_s, streamed = _cold_streamed_infer(swarm, common)
        answer = json.loads(swarm.run("requester", "infer", "--json", *common, PROMPT))
        net_listen = [*net, "--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1"]
        engine = _engine_ttft(store_dir)
        pd = _pd_handoff(swarm, net_listen, (a["peer_id"], b["peer_id"]), engine[0])
        session = _warm_session(swarm, net_listen, store_dir, engine)
        print(
            json.dumps(
                {
                    "cold_ttft_s": cold_ttft_s,
                    "streamed_text": streamed,
                    "workers_start_s": workers_s,
                    "workers_shared_s": shared_s,
                    "answer": answer,
                    "pd": pd,
                    "session": session,
                }
            )
        )
        return 0
    finally:
        _close_session(swarm)
        swarm.stop()
        shutil.rmtree(work, ignore_errors=True)


def _swarm_in_netns(store_dir: Path) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise RuntimeError(
            "pipeline figures need a loopback-only network namespace (root and iproute2); "
            "not running Ray on this machine's network"
        )
    if not BIN.exists():
        raise FileNotFoundError(f"{BIN} is not built (make build)")
    env = dict(os.environ)
    env.setdefault("EDGELLM_PYTHON", sys.executable)
    env.setdefault("EDGELLM_MODELS_DIR", str(REPO / ".cache" / "models"))
    proc = subprocess.Popen(
        [str(IN_NETNS), sys.executable, str(Path(__file__).resolve()), "--swarm", str(store_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # one group: a timeout stops all of it, and only it
    )
    try:
        out, _ = proc.communicate(timeout=OUTER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=STOP_GRACE_S + 10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise TimeoutError(f"swarm part ran past {OUTER_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"swarm part exited {proc.returncode} (network namespace or swarm failed; see stderr)"
        )
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("swarm part printed no figures (was the network namespace made?)")
    return json.loads(lines[-1])


# ---------------------------------------------------------------- in the bench process


def _baselines(store_dir: Path, new_tokens: int) -> dict[str, Any]:
    """Single-process figures on the same chat-templated prompt: transformers `generate`
    decode tokens/s (N-token run minus 1-token run, median of REPEATS) and the torch
    engine's TTFT."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgellm.engine.base import EngineConfig
    from edgellm.engine.registry import engine_class
    from edgellm.engine.types import GenerationRequest, SamplingParams

    engine = engine_class("torch").load(EngineConfig(store_dir))
    ids = torch.tensor([engine.prepare(GenerationRequest("x", prompt=PROMPT)).prompt_ids])
    model = AutoModelForCausalLM.from_pretrained(store_dir).eval()

    def generate(n: int) -> tuple[float, list[int]]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n
            )
        return time.perf_counter() - start, out[0, ids.shape[1] :].tolist()

    # A full prefill every time: skip the engine's prefix cache where it has one.
    uncached = {"no_prefix_cache": True} if _has_field(GenerationRequest, "no_prefix_cache") else {}

    def ttft_ms() -> float:
        request = GenerationRequest("bench", prompt=PROMPT, sampling=SamplingParams(1), **uncached)
        return list(engine.generate(request))[-1].timings.ttft_ms

    generate(4)  # warm-up
    ttft_ms()
    rates, ttfts, tokens = [], [], []
    for _ in range(REPEATS):
        t1, _ = generate(1)
        tn, tokens = generate(new_tokens)
        n = len(tokens)
        rates.append((n - 1) / (tn - t1) if n > 1 and tn > t1 else 0.0)
        ttfts.append(ttft_ms())
    return {
        "generate_tok_s": statistics.median(rates),
        "engine_ttft_s": statistics.median(ttfts) / 1000,
        "prompt_tokens": ids.shape[1],
        "token_ids": tokens,
    }


def _p5(rates: list[float]) -> float:
    """The 5th percentile of rates: for a rate, the slow end is the low one."""
    ordered = sorted(rates)
    return ordered[round(0.05 * (len(ordered) - 1))]


def _quantile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of a few values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(store_dir: Path) -> dict[str, Any]:
    swarm = _swarm_in_netns(store_dir)
    answer = swarm["answer"]
    base = _baselines(store_dir, max(int(answer["completion_tokens"]), 2))
    decode = swarm["session"]["decode"]
    split_tok_s = statistics.median(decode["split_tok_s"])
    generate_tok_s = statistics.median(decode["generate_tok_s"])
    decode_ratio = split_tok_s / generate_tok_s if generate_tok_s else 0.0
    ttft_ratio = swarm["cold_ttft_s"] / base["engine_ttft_s"] if base["engine_ttft_s"] else None
    session = swarm["session"]
    warm_ms = statistics.median(session["ttft_ms"])
    engine_ms = statistics.median(session["engine_ttft_ms"])
    warm_ratio = warm_ms / engine_ms if engine_ms else None
    pairs = zip(session["ttft_ms"], session["engine_ttft_ms"], strict=True)
    prefix = session["prefix"]
    cold_ms = statistics.median(prefix["uncached_ttft_ms"])
    warm_prefix_ms = statistics.median(prefix["cached_ttft_ms"])
    speedup = cold_ms / warm_prefix_ms if warm_prefix_ms else None
    return {
        "pd_handoff_share": _pd_figure(swarm["pd"]["runs"]),
        "split_prefix_cache_ttft_speedup": {
            "value": speedup,
            "unit": "ratio",
            "baseline": cold_ms / 1000,
            "ratio": speedup,
            "goal": 8,
            "p50_uncached_ttft_ms": cold_ms,
            "p50_cached_ttft_ms": warm_prefix_ms,
            "p95_cached_ttft_ms": _quantile(prefix["cached_ttft_ms"], 0.95),
            "p99_cached_ttft_ms": _quantile(prefix["cached_ttft_ms"], 0.99),
            "uncached_ttft_ms": prefix["uncached_ttft_ms"],
            "cached_ttft_ms": prefix["cached_ttft_ms"],
            "cached_prompt_tokens": prefix["cached_prompt_tokens"],
            "prompt_tokens": prefix["prompt_tokens"],
            "stages": session["stages"],
            "pairs": PREFIX_REPEATS,
        },
        "warm_session_ttft_ratio": {
            "value": warm_ratio,
            "unit": "ratio",
            "baseline": engine_ms / 1000,
            "ratio": warm_ratio,
            "warm_session_ttft_s": warm_ms / 1000,
            "engine_ttft_s": engine_ms / 1000,
            "session_ttft_ms": session["ttft_ms"],
            "session_ttft_ms_p95": _quantile(session["ttft_ms"], 0.95),
            "engine_ttft_ms": session["engine_ttft_ms"],
            "engine_ttft_ms_p95": _quantile(session["engine_ttft_ms"], 0.95),
            "pair_ratios": [w / e if e else None for w, e in pairs],
            "engine_skips_prefix_cache": session["engine_skips_prefix_cache"],
            "session_prompt_tokens": session["prompt_tokens"],
            "session_cached_prompt_tokens": session["cached_prompt_tokens"],
            "session_kv_fetch_ms": session["kv_fetch_ms"],
            "session_wall_ttft_s": session["wall_ttft_s"],
            "session_open_s": session["open_s"],
            "cold_ttft_s": swarm["cold_ttft_s"],
            "bench_process_engine_ttft_s": base["engine_ttft_s"],
            "load_avg_1m": session["load_avg_1m"],
            "engine_torch_threads": session["engine_torch_threads"],
            "stages": session["stages"],
            "peers": 3,
            "prompts": len(SESSION_PROMPTS),
        },
        "pipeline_decode_ratio": {
            "value": decode_ratio,
            "unit": "ratio",
            "baseline": generate_tok_s,
            "ratio": decode_ratio,
            "pipeline_tok_s": split_tok_s,
            "pipeline_tok_s_p95": _p5(decode["split_tok_s"]),  # the slow end of a rate
            "generate_tok_s": generate_tok_s,
            "generate_tok_s_p95": _p5(decode["generate_tok_s"]),
            "pipeline_tok_s_runs": decode["split_tok_s"],
            "generate_tok_s_runs": decode["generate_tok_s"],
            "decode_tokens": decode["tokens"],
            "same_tokens": decode["same_tokens"],
            "interleaved": True,
            "bench_torch_threads": decode["torch_threads"],
            "one_shot_infer_tok_s": float(answer["tokens_per_s"]),
            "one_shot_generate_tok_s": base["generate_tok_s"],
            "one_shot_same_tokens": answer.get("token_ids") == base["token_ids"],
            "pipeline_ttft_ms": answer["ttft_ms"],
            "stages": len(answer.get("stages") or []),
            "prompt_tokens": answer["prompt_tokens"],
            "same_prompt_tokens": answer["prompt_tokens"] == base["prompt_tokens"],
            "repeats": REPEATS,
        },
        "cold_ttft_s": {
            "value": swarm["cold_ttft_s"],
            "unit": "s",
            "baseline": base["engine_ttft_s"],
            "ratio": ttft_ratio,
            "peers": 3,
            "stages": 2,
            "workers_start_s": swarm["workers_start_s"],
            # From the first worker's launch until both had shared their model over IPFS,
            # which the cold infer waits for (_Swarm.shared).
            "workers_shared_s": swarm["workers_shared_s"],
            # A second cold one-shot infer (--json): its cluster's phases (node_start
            # overlaps discover_plan) and its TTFT (stage loads + prefill, in the backend).
            "json_infer_phases_ms": answer.get("phases_ms"),
            "json_infer_ttft_ms": answer["ttft_ms"],
        },
    }


def _pd_figure(runs: list[dict[str, Any]]) -> dict[str, Any]:
    handoff = [r["kv_store_ms"] + r["kv_fetch_ms"] for r in runs]
    prefill = [r["engine_prefill_ms"] for r in runs]
    share = statistics.median(handoff) / statistics.median(prefill)
    return {
        "value": share,
        "unit": "ratio",
        "baseline": statistics.median(prefill),
        "ratio": share,
        "goal": 0.10,
        "handoff_ms": statistics.median(handoff),
        "handoff_ms_p95": _quantile(handoff, 0.95),
        "kv_store_ms": statistics.median(r["kv_store_ms"] for r in runs),
        "kv_fetch_ms": statistics.median(r["kv_fetch_ms"] for r in runs),
        "engine_prefill_ms": statistics.median(prefill),
        "engine_prefill_ms_p95": _quantile(prefill, 0.95),
        "runs": runs,
        "path": "the real path: two workers in a loopback namespace, a cold P/D infer each",
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--swarm":
        sys.exit(swarm_main(Path(sys.argv[2])))
    sys.exit(
        f"usage: {sys.argv[0]} --swarm STORE_DIR (run by bench/run.py inside a network namespace)"
    )
