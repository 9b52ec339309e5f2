"""proctree on cheap real processes (sh, sleep, tests/procs/driver.py): the /proc helpers, stop() and kill() of a
whole tree, the guard after a SIGKILL of its parent, and an entry point's stop signals."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loraplane.serving import proctree
from tests.procs.support import assert_all_gone, wait_for_tree
from tests.support.kube import REPO, poll

# sh with a child in its group and one that left it (setsid): the shapes a stop must reach
IGNORES_SIGTERM = "trap '' TERM; sleep 1000 & setsid sleep 1001 & wait"
EXITS_ON_SIGTERM = "trap 'exit 0' TERM; sleep 1000 & setsid sleep 1001 & wait"


def shell_tree(proc: subprocess.Popen[bytes]) -> list[proctree.Proc]:
    """The sh and its two sleeps, once both run (one in its group, one in a session of its own)."""
    return wait_for_tree(proc.pid, settled(3, 2), "sh and its two sleeps", timeout=10)


def settled(count: int, groups: int) -> Callable[[list[proctree.Proc]], bool]:
    """A tree of `count` processes in `groups` process groups (a forked child calls setsid a moment later)."""
    return lambda procs: len(procs) == count and len({p.pgid for p in procs}) == groups


def test_parse_stat_finds_the_fields_after_a_name_with_spaces_and_parentheses() -> None:
    line = "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 1000 7 0\n"
    assert proctree.parse_stat(line) == proctree.Proc(pid=4242, ppid=1, pgid=4240, state="S", start=987654)
    me = proctree.read_proc(os.getpid())
    assert me is not None and (me.ppid, me.pgid, me.exited) == (os.getppid(), os.getpgid(0), False)
    assert proctree.read_proc(2**22 + 1) is None  # above pid_max: no such process


def test_descendants_follow_parent_links_and_groups_include_those_that_left() -> None:
    def proc(pid: int, ppid: int, pgid: int) -> proctree.Proc:
        return proctree.Proc(pid, ppid, pgid, "S", pid)

    table = {p.pid: p for p in [proc(1, 0, 1), proc(10, 1, 10), proc(11, 10, 10), proc(12, 11, 12), proc(20, 1, 20)]}
    assert [p.pid for p in proctree.descendants(table, [10])] == [11, 12]
    assert [p.pid for p in proctree.descendants(table, [20])] == []
    assert sorted(p.pid for p in proctree.tree_of_groups(table, {10})) == [10, 11, 12]


def test_guard_messages_leave_the_groups_still_registered() -> None:
    lines = [proctree.encode_watch(7, 100), proctree.encode_watch(8, 200), proctree.encode_release(7), b"junk\n"]
    assert proctree.registered(lines) == {8: 200}


def test_stop_sigkills_the_tree_of_a_child_that_ignores_sigterm() -> None:
    proc = proctree.spawn(["sh", "-c", IGNORES_SIGTERM])
    procs = shell_tree(proc)
    started = time.monotonic()
    assert proctree.stop(proc, grace=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert_all_gone(procs, timeout=5)


def test_stop_lets_the_child_exit_then_kills_what_it_left_behind() -> None:
    proc = proctree.spawn(["sh", "-c", EXITS_ON_SIGTERM])
    procs = shell_tree(proc)
    assert proctree.stop(proc, grace=10) == 0
    assert_all_gone(procs, timeout=5)
    assert proctree.stop(proc) == 0, "stopping it again is a no-op"


def test_kill_ends_the_tree_at_once() -> None:
    proc = proctree.spawn(["sh", "-c", EXITS_ON_SIGTERM])
    procs = shell_tree(proc)
    assert proctree.kill(proc) == -signal.SIGKILL
    assert_all_gone(procs, timeout=5)


def test_no_child_holds_the_guards_pipe() -> None:
    """Only we hold the write end: children do not inherit it and a forked copy of us closes it."""
    proc = proctree.spawn(["sleep", "1000"])
    try:
        guard = proctree.guard_pid()
        assert guard is not None
        pipe = os.readlink(f"/proc/{guard}/fd/0")
        assert pipe.startswith("pipe:")

        def holds(pid: int) -> bool:
            links = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError):  # the fd that listed them is closed by now
                    links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            return pipe in links

        assert holds(os.getpid()) and not holds(proc.pid)
        child = os.fork()
        if child == 0:  # pragma: no cover - the forked copy only waits to be looked at
            time.sleep(30)
            os._exit(0)
        try:
            poll("the forked copy to close the guard's pipe", lambda: not holds(child), timeout=10)
        finally:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    finally:
        proctree.stop(proc, grace=1)


def driver(tmp_path: Path, grace: float, script: str) -> tuple[subprocess.Popen[str], list[proctree.Proc]]:
    """tests/procs/driver.py running `script` under sh, and its whole tree once up (driver, guard, sh, 2 sleeps)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.procs.driver", str(grace), "sh", "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("ready "), "the driver did not start its child"
    procs = wait_for_tree(proc.pid, settled(5, 4), "driver, guard, sh and its two sleeps", timeout=10)
    return proc, procs


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_entry_point_stops_its_children_on_a_stop_signal(tmp_path: Path, sig: signal.Signals) -> None:
    proc, procs = driver(tmp_path, 30, EXITS_ON_SIGTERM)
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == 128 + sig
    assert_all_gone(procs, timeout=5)


def test_a_second_signal_forces_the_stop(tmp_path: Path) -> None:
    marker = tmp_path / "term"
    proc, procs = driver(
        tmp_path, 600, f"trap 'echo > {marker}' TERM; sleep 1000 & setsid sleep 1001 & while :; do wait; done"
    )
    proc.send_signal(signal.SIGTERM)
    poll("the child to get its SIGTERM (it ignores it)", marker.exists, timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 128 + signal.SIGTERM
    assert_all_gone(procs, timeout=5)


def test_the_guard_stops_the_tree_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    proc, procs = driver(tmp_path, 30, IGNORES_SIGTERM)
    proc.kill()
    proc.wait()
    took = assert_all_gone(procs, timeout=proctree.GUARD_GRACE_S + 10)
    print(f"guard: tree gone {took:.1f}s after SIGKILL of its parent")
