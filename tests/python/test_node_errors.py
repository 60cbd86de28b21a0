"""What a Ray node's failed start says: `ray start`'s last line first, then its log, then
the raylet's own errors (a raylet that never registers leaves `ray start` saying only that
the node timed out during startup; its log, in the temp dir the cleanup removes, says why,
or how far it got)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.cluster.node import LOG_NAME, RAYLET_LOG, _log_tail, raylet_tail

RAYLET_OUT = """\
[2026-12-02 16:09:57,046 I 27140 27140] (raylet) main.cc:283: Setting cluster ID to: 0334bc
[2026-12-02 16:09:57,050 W 27140 27140] (raylet) main.cc:300: a warning, not an error
[2026-12-02 16:09:57,051 E 27140 27140] (raylet) gcs_client.cc:120: first error
[2026-12-02 16:09:57,052 E 27140 27141] (raylet) gcs.cc:121: no internal config: InvalidAuthToken
[2026-12-02 16:09:57,053 I 27140 27140] (raylet) main.cc:400: more info
[2026-12-02 16:09:58,001 E 27140 27140] node_manager.cc:77: Raylet could not register
[2026-12-02 16:09:58,002 F 27140 27140] (raylet) main.cc:500: Check failed: registered
"""


def _node_temp(tmp_path: Path, raylet: str | None, start_log: str | None) -> Path:
    if raylet is not None:
        (tmp_path / RAYLET_LOG).parent.mkdir(parents=True)
        (tmp_path / RAYLET_LOG).write_text(raylet)
    if start_log is not None:
        (tmp_path / LOG_NAME).write_text(start_log)
    return tmp_path


def test_the_raylets_last_errors_in_order(tmp_path: Path) -> None:
    temp = _node_temp(tmp_path, RAYLET_OUT, None)
    assert raylet_tail(temp) == (
        "gcs.cc:121: no internal config: InvalidAuthToken"
        " | node_manager.cc:77: Raylet could not register"
        " | main.cc:500: Check failed: registered"
    )


@pytest.mark.parametrize(
    ("raylet", "start_log", "want"),
    [
        (None, None, ""),
        ("", "", ""),
        (
            None,
            "starting\nException: The current node timed out during startup.\n",
            "Exception: The current node timed out during startup. (log: starting)",
        ),
        (
            "[2026-12-02 16:09:58,001 E 1 1] (raylet) a.cc:1: GCS unreachable\n",
            "starting\nException: timed out\n",
            "Exception: timed out (log: starting) (raylet: a.cc:1: GCS unreachable)",
        ),
        (
            "[2026-12-02 16:09:58,001 I 1 1] (raylet) a.cc:1: all well\n"
            "[2026-12-02 16:09:58,002 W 1 1] (raylet) b.cc:2: waiting for the GCS\n",
            "Exception: timed out\n",
            "Exception: timed out (log: )"
            " (raylet: last: a.cc:1: all well | b.cc:2: waiting for the GCS)",
        ),
        (
            "[2026-12-02 16:09:58,001 E 1 1] (raylet) a.cc:1: GCS unreachable\n",
            None,
            "(raylet: a.cc:1: GCS unreachable)",
        ),
    ],
    ids=["nothing", "empty", "start-log-only", "both", "raylet-without-errors", "raylet-only"],
)
def test_a_failed_start_says_why(tmp_path: Path, raylet, start_log, want) -> None:
    assert _log_tail(_node_temp(tmp_path, raylet, start_log)) == want


def test_only_the_end_of_a_long_raylet_log_is_read(tmp_path: Path) -> None:
    old = "[2026-12-02 16:00:00,000 E 1 1] (raylet) a.cc:1: long ago\n"
    filler = "[2026-12-02 16:00:01,000 I 1 1] (raylet) a.cc:2: " + "x" * 200 + "\n"
    temp = _node_temp(tmp_path, old + filler * 1000, None)
    assert raylet_tail(temp, count=1) == "last: a.cc:2: " + "x" * 200
