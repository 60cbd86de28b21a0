"""A cluster session's recent P/D handoffs (edgellm.cluster.disaggregated.handoffs): which
one a failover's new decode peer may start from."""

from __future__ import annotations

from edgellm.cluster.disaggregated.handoffs import RecentHandoffs
from edgellm.cluster.disaggregated.messages import Handoff

H = Handoff(b"{}", 1.0, 16)


def test_only_another_runner_takes_a_handoff_for_tokens_past_its_prompt() -> None:
    handoffs = RecentHandoffs()
    handoffs.keep("old", "m", [1, 2, 3], H)
    assert handoffs.take("old", "m", [1, 2, 3, 4]) is None  # the same plan: P/D as usual
    assert handoffs.take("new", "other", [1, 2, 3, 4]) is None  # another model
    assert handoffs.take("new", "m", [1, 2, 3]) is None  # nothing generated after it
    assert handoffs.take("new", "m", [1, 2, 9, 4]) is None  # another prompt
    kept = handoffs.take("new", "m", [1, 2, 3, 4, 5])
    assert kept is not None and kept.prompt == (1, 2, 3) and kept.handoff is H
    assert handoffs.take("newer", "m", [1, 2, 3, 4, 5]) is None  # taken once
    assert len(handoffs) == 0


def test_the_longest_prompt_wins_and_the_oldest_go_first() -> None:
    handoffs = RecentHandoffs(limit=2)
    handoffs.keep("a", "m", [1], H)
    handoffs.keep("a", "m", [1, 2], H)
    handoffs.keep("a", "m", [1, 2, 3], H)  # [1] goes
    assert len(handoffs) == 2
    kept = handoffs.take("b", "m", [1, 2, 3, 4])
    assert kept is not None and kept.prompt == (1, 2, 3)
    kept = handoffs.take("b", "m", [1, 2, 3, 4])
    assert kept is not None and kept.prompt == (1, 2)
    assert handoffs.take("b", "m", [1, 2, 3, 4]) is None


def test_an_empty_handoff_is_not_kept() -> None:
    handoffs = RecentHandoffs()
    handoffs.keep("a", "m", [1, 2], Handoff())
    handoffs.keep("a", "m", [], H)
    assert len(handoffs) == 0
