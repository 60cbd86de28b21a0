"""`python -m edgellm.models COMMAND`: the model store from the command line.

  prepare MODEL        convert a known model (e.g. smollm2-135m) into the store
  add PATH [--id ID]   add a transformers directory or a .gguf file
  list [--json]        every model: known ones and those in the store
  show ID [--json]     one model's manifest
  rm ID                remove a model from the store
  publish ID           add a store entry to this node's Kubo; prints weights and directory CID
  pull CID             fetch a published model directory through this node's Kubo
                       (`edgellm model pull` finds the holders in the swarm's records)

publish and pull use the Kubo of a running node (worker or serve) of the same data
directory, found in <data dir>/ipfs/api, or --ipfs-api.

`edgellm model ...` runs this. Progress goes to stderr as a status line when stderr is a
terminal; piped, it is quiet. A failure prints one line (to stderr, or as `KIND\\tREASON`
to --reason-fd for the Go CLI, KIND being invalid, not_found, holder (this holder failed: the
caller may try another) or error) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from edgellm.config import load_config
from edgellm.errors import EdgeLLMError, InvalidRequest, ModelNotFound
from edgellm.models import share
from edgellm.models.add import add_model
from edgellm.models.share import PHASE_PULL
from edgellm.models.store import ModelStore


class StatusLine:
    """Rewrites one stderr line per phase, at most ten times a second; a pull shows bytes,
    rate and time left."""

    def __init__(self) -> None:
        self._last = 0.0
        self._phase = ""
        self._started = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase == self._phase and now - self._last < 0.1 and done != total:
            return
        if phase != self._phase:
            if self._phase:
                sys.stderr.write("\n")
            self._started = now
        self._phase, self._last = phase, now
        amount = f"{100 * done / total:5.1f}%" if total else "..."
        if phase == PHASE_PULL and total:
            rate = done / max(now - self._started, 1e-3)
            left = (total - done) / rate if rate else 0
            amount += (
                f"  {done / 1e6:.1f}/{total / 1e6:.1f} MB  {rate / 1e6:.1f} MB/s  {left:.0f}s left"
            )
        sys.stderr.write(f"\r{phase}: {amount}\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self._phase:
            sys.stderr.write("\n")


def _quiet(phase: str, done: int, total: int) -> None:
    pass


def _parse(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", help="model store (default: from config)")
    common.add_argument("--data-dir", help="data directory (default: from config)")
    common.add_argument("--config", help="edgellm.yaml to read")
    common.add_argument("--reason-fd", type=int, help="write a failure's reason to this fd")
    parser = argparse.ArgumentParser(prog="python -m edgellm.models")
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", parents=[common], help="convert a known model")
    prepare.add_argument("model", help="model id, e.g. smollm2-135m")
    add = sub.add_parser("add", parents=[common], help="add a model directory or .gguf")
    add.add_argument("path")
    add.add_argument("--id", dest="model_id", help="model id (default: from the name)")
    listing = sub.add_parser("list", parents=[common], help="list models")
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", parents=[common], help="show one model")
    show.add_argument("model")
    show.add_argument("--json", action="store_true")
    rm = sub.add_parser("rm", parents=[common], help="remove a model from the store")
    rm.add_argument("model")
    ipfs = argparse.ArgumentParser(add_help=False)
    ipfs.add_argument("--ipfs-api", help="Kubo RPC API (default: <data dir>/ipfs/api)")
    publish = sub.add_parser("publish", parents=[common, ipfs], help="add a model to Kubo")
    publish.add_argument("model")
    pull = sub.add_parser("pull", parents=[common, ipfs], help="fetch a model by its CID")
    pull.add_argument("cid", help="the model's directory CID")
    pull.add_argument("--disk-budget-mb", type=int, help="refuse a model larger than this")
    pull.add_argument("--timeout", type=float, default=30.0, help="seconds to find the CID")
    pull.add_argument(
        "--connect", action="append", default=[], help="a holder's Kubo multiaddr (/p2p/...)"
    )
    pull.add_argument("--claim-id", help="the model id the holder's record claims")
    pull.add_argument("--claim-weights", help="the weights CID the holder's record claims")
    return parser.parse_args(argv)


def _row(store: ModelStore, model_id: str) -> dict:
    manifest = store.manifest(model_id)
    row = {"id": model_id, "in_store": manifest is not None}
    if manifest is not None:
        row.update(asdict(manifest))
    elif model_id in store.registry:
        row["source"] = "known: " + store.registry.get(model_id).description
    return row


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n else "-"


def _print_table(rows: list[dict]) -> None:
    header = ("ID", "ARCHITECTURE", "PARAMS", "LAYERS", "SIZE", "WEIGHTS CID", "SOURCE")
    table = [header]
    for r in rows:
        table.append(
            (
                r["id"],
                r.get("architecture", "-"),
                _count(r.get("parameters", 0)),
                str(r.get("num_layers", "-")),
                _size(r["weights_bytes"]) if "weights_bytes" in r else "-",
                r.get("weights_cid", "-"),
                r.get("source") or "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def _run(args: argparse.Namespace, store: ModelStore) -> None:
    if args.command in ("prepare", "add"):
        status = StatusLine() if sys.stderr.isatty() else None
        try:
            if args.command == "prepare":
                store.ensure(args.model, progress=status)
                print(store.path(args.model))
            else:
                manifest = add_model(store, Path(args.path), args.model_id, status or _quiet)
                print(f"{manifest.id} {manifest.weights_cid}")
        finally:
            if status is not None:
                status.close()
    elif args.command == "list":
        rows = [_row(store, i) for i in store.ids()]
        if args.json:
            print(json.dumps({"models": rows}, indent=2))
        else:
            _print_table(rows)
    elif args.command == "show":
        row = _row(store, args.model)
        if args.json:
            print(json.dumps(row, indent=2))
        else:
            for key, value in row.items():
                print(f"{key}: {value}")
    elif args.command == "rm":
        store.remove(args.model)
        print(f"removed {args.model}")
    elif args.command == "publish":
        shared = share.publish(store, args.model, _ipfs_api(args))
        print(f"{shared.model_id} {shared.weights_cid} {shared.dir_cid}")
    elif args.command == "pull":
        status = StatusLine() if sys.stderr.isatty() else None
        budget = args.disk_budget_mb * 1_000_000 if args.disk_budget_mb is not None else None
        claim = None
        if args.claim_id and args.claim_weights:
            claim = share.Claim(args.claim_id, args.claim_weights)
        api = _ipfs_api(args)
        before = share.bitswap_received(api)
        try:
            manifest = share.pull(
                store,
                args.cid,
                api,
                status or _quiet,
                budget,
                args.timeout,
                tuple(args.connect),
                claim,
            )
        finally:
            if status is not None:
                status.close()
        # What came over the network this time (the rest was in the IPFS node already:
        # a rerun after an interrupted pull fetches only the blocks still missing).
        fetched = share.bitswap_received(api) - before
        print(f"pulled {manifest.id}: {fetched} bytes from the swarm", file=sys.stderr)
        print(f"{manifest.id} {manifest.weights_cid}")


def _ipfs_api(args: argparse.Namespace) -> str:
    """--ipfs-api, else the API of the Kubo a running node keeps in <data dir>/ipfs."""
    if args.ipfs_api:
        return args.ipfs_api
    api_file = load_config(args.config, {"data_dir": args.data_dir}).data_dir / "ipfs" / "api"
    try:
        return api_file.read_text().strip()
    except OSError as exc:
        raise InvalidRequest(
            f"no running Kubo ({api_file} unreadable): start `edgellm worker` or pass --ipfs-api"
        ) from exc


def _kind(exc: EdgeLLMError) -> str:
    if isinstance(exc, share.HolderRefused):
        return "holder"
    if isinstance(exc, ModelNotFound):
        return "not_found"
    return "invalid" if isinstance(exc, InvalidRequest) else "error"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        flags = {"models_dir": args.models_dir, "data_dir": args.data_dir}
        config = load_config(args.config, {k: v for k, v in flags.items() if v})
        _run(args, ModelStore(config.models_dir))
    except EdgeLLMError as exc:
        reason = str(exc).replace("\n", " ")
        if args.reason_fd is not None:
            os.write(args.reason_fd, f"{_kind(exc)}\t{reason}\n".encode())
        else:
            print(f"error: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
