"""The per-object trigger coalescing both controllers share (pure: threads and events, no cluster)."""

from __future__ import annotations

import threading

import pytest

from loraplane.operator.coalesce import Coalescer


def test_triggers_during_a_round_become_one_more_round_with_sticky_apply() -> None:
    rounds: list[bool] = []
    entered, release = threading.Event(), threading.Event()
    coalescer: Coalescer[int] = Coalescer()

    def round_(apply: bool) -> int:
        rounds.append(apply)
        if len(rounds) == 1:
            entered.set()
            assert release.wait(10)
        return len(rounds)

    first: list[int | None] = []
    runner = threading.Thread(target=lambda: first.append(coalescer.run("a", round_, apply=False)))
    runner.start()
    assert entered.wait(10)
    # three triggers while the first round runs: each returns at once, one asks to apply children
    assert coalescer.run("a", round_, apply=True) is None
    assert coalescer.run("a", round_, apply=False) is None
    assert coalescer.run("a", round_, apply=False) is None
    assert coalescer.run("b", lambda apply: 99, apply=False) == 99  # other objects are not held up
    release.set()
    runner.join(10)
    assert first == [2] and rounds == [False, True]  # exactly one more round, and it applied


def test_a_failing_round_frees_the_object_and_forget_waits_for_a_running_round() -> None:
    coalescer: Coalescer[str | None] = Coalescer()

    def boom(apply: bool) -> str:
        raise RuntimeError("api down")

    with pytest.raises(RuntimeError, match="api down"):
        coalescer.run("a", boom, apply=True)
    assert coalescer.run("a", lambda apply: "ran", apply=False) == "ran"  # not left "busy" by the failure
    order: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def slow(apply: bool) -> str:
        entered.set()
        release.wait(10)
        order.append("round")
        return "slow"

    runner = threading.Thread(target=coalescer.run, args=("a", slow), kwargs={"apply": False})
    runner.start()
    assert entered.wait(10)
    threading.Timer(0.2, release.set).start()
    coalescer.forget("a", wait=10)
    order.append("forgotten")
    runner.join(10)
    assert order == ["round", "forgotten"]
