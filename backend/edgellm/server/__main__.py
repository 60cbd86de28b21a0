"""`python -m edgellm.server --listen ADDR [options]`: run the backend's gRPC server.

Exit status: 0 after a clean stop, 2 for bad flags or configuration (an unknown engine, or
one whose package is missing, included), 1 for a fatal error.
"""

from __future__ import annotations

import argparse
import logging
import sys

from edgellm.config import DEVICES, load_config
from edgellm.engine.registry import check_available
from edgellm.errors import EdgeLLMError
from edgellm.server.listen import ListenRefused, check_listen

log = logging.getLogger("edgellm.server")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgellm.server")
    parser.add_argument(
        "--listen", required=True, help="unix:/abs/path.sock or loopback 127.0.0.1:PORT"
    )
    parser.add_argument("--data-dir", help="node data directory (holds edgellm.yaml)")
    parser.add_argument("--models-dir", help="model store directory")
    parser.add_argument("--config", help="edgellm.yaml to read instead of <data-dir>/edgellm.yaml")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--device", choices=DEVICES, help="compute device (default auto)")
    parser.add_argument("--engine", help="engine name (default torch)")
    parser.add_argument(
        "--ipfs-api", help="Kubo RPC API for KV blocks, e.g. http://127.0.0.1:5001 (default off)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        check_listen(args.listen)
    except ListenRefused as exc:
        log.error("%s", exc)
        return 2
    overrides = {
        "data_dir": args.data_dir,
        "models_dir": args.models_dir,
        "device": args.device,
        "engine": args.engine,
        "kv": {"ipfs_api": args.ipfs_api},
    }
    try:
        config = load_config(args.config, overrides)
        # An unknown engine, or one whose package is missing: one line, before serving.
        check_available(config.engine)
    except EdgeLLMError as exc:
        log.error("configuration: %s", exc)
        return 2
    # gRPC and the services are imported only once the flags and the configuration passed
    # (torch and transformers later still, in the background: edgellm.warm).
    from edgellm.server.app import ServeOptions, serve

    try:
        return serve(config, ServeOptions(listen=args.listen, parent_pid=args.parent_pid))
    except EdgeLLMError as exc:
        log.error("fatal: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
