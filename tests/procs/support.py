"""Process trees for the tests: what runs below a pid now (from /proc, by parent links, never by name), and a
bounded wait until every one of them is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from loraplane.serving import proctree
from tests.procs.plugin import command_line
from tests.support.kube import REPO, poll


def tree(pid: int) -> list[proctree.Proc]:
    """`pid` and all its descendants, now (by /proc/*/stat parent links)."""
    table = proctree.process_table()
    return [table[pid], *proctree.descendants(table, [pid])]


def describe(procs: list[proctree.Proc]) -> str:
    return "; ".join(f"{p.pid} (parent {p.ppid}, group {p.pgid}): {command_line(p.pid)[:120]}" for p in procs)


def assert_all_gone(procs: list[proctree.Proc], timeout: float) -> float:
    """Wait until none of `procs` runs; seconds it took. Fails naming those still running at the deadline."""
    started = time.monotonic()
    left = proctree.wait_gone(procs, timeout)
    assert not left, f"still running {timeout:.0f}s later: {describe(left)}"
    return time.monotonic() - started


def wait_for_tree(
    pid: int, check: Callable[[list[proctree.Proc]], bool], what: str, timeout: float
) -> list[proctree.Proc]:
    """Poll `pid`'s tree until `check(tree)` holds; returns that tree."""

    def ready() -> list[proctree.Proc] | None:
        me = proctree.read_proc(pid)
        if me is None or me.exited:
            raise AssertionError(f"pid {pid} exited while waiting for {what}")
        procs = tree(pid)
        return procs if check(procs) else None

    return list(poll(what, ready, timeout=timeout))


def start(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`argv` as a user starts it (not through proctree: the test signals it), output to `log`, in the repo."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "COLUMNS": "200", **env},
            # a background job starts with SIGINT ignored; give the command a terminal's default disposition
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
