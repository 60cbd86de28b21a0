"""The check make compose-test applies to the dev swarm client's output (compose_client.py)."""

from __future__ import annotations

import json

import pytest

from tests.python.compose_client import ANSWER, check


def _peer(peer_id: str, model: str = "smollm2-135m") -> dict:
    return {"peer_id": peer_id, "models": [{"id": model, "num_layers": 30}]}


def _output(peers: list[dict], answer: str = ANSWER, indent: int | None = 2) -> str:
    # As the client prints it: peers --json, infer's stage lines (stderr), the answer.
    return "\n".join(
        [
            "until the bootstrap's worker.json exists…",
            json.dumps(peers, indent=indent),
            "stage 1: 12D3KooWA layers 0-15",
            answer,
        ]
    )


def test_three_workers_and_the_answer_pass() -> None:
    assert check(_output([_peer("A"), _peer("B"), _peer("C")])) == []
    assert check(_output([_peer("A"), _peer("B"), _peer("C")], indent=None)) == []


@pytest.mark.parametrize(
    ("peers", "answer", "problem"),
    [
        ([_peer("A"), _peer("B")], ANSWER, "saw 2 peers"),
        ([_peer("A"), _peer("B"), _peer("C", model="other")], ANSWER, "2 serving"),
        ([_peer("A"), _peer("A"), _peer("B")], ANSWER, "listed twice"),
        ([_peer("A"), _peer("B"), _peer("C")], "The capital of France is Lyon.", "no answer"),
    ],
)
def test_a_wrong_swarm_or_answer_fails(peers: list[dict], answer: str, problem: str) -> None:
    problems = check(_output(peers, answer))
    assert any(problem in p for p in problems), problems


def test_no_peer_list_fails() -> None:
    with pytest.raises(SystemExit, match="no peer list"):
        check(ANSWER)
