"""pytest plugin: a test session stops the way our entry points do, and leaves no process running.

- SIGTERM and SIGHUP stop the session as Ctrl-C does: the fixtures are torn down (vLLM drained, operator and
  cluster stopped); a second stop signal kills every child's tree at once (`proctree.handle_stop_signals`).
- Every process the session starts inherits LORAPLANE_TEST_SESSION, which carries this session's token. After
  the session's own teardown (every other `pytest_sessionfinish`: the session fixtures, so the cluster too),
  any process still running that descends from pytest, or carries the token (detached ones, such as
  hack/cluster.sh's components), fails the session, named with its pid and command line, and is killed.

Registered by tests/conftest.py; `python -m pytest -p tests.procs.plugin` loads it into any session.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Generator

import pytest

from loraplane.serving import proctree

SESSION_ENV = "LORAPLANE_TEST_SESSION"
LEFTOVER_WAIT_S = 20.0  # a process stopped at the end of the session may take a moment to go

_token = f"{os.getpid()}-{secrets.token_hex(4)}"


def carries(pid: int, token: str) -> bool:
    """Process `pid`'s environment has `token` among the words of LORAPLANE_TEST_SESSION."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read().split(b"\0")
    except OSError:
        return False
    prefix = f"{SESSION_ENV}=".encode()
    return any(token.encode() in e[len(prefix) :].split() for e in environ if e.startswith(prefix))


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def session_processes(token: str) -> list[proctree.Proc]:
    """Running processes below this one or carrying `token`, but for this process and its guard."""
    me = os.getpid()
    table = proctree.process_table()
    found = {p.pid: p for p in proctree.descendants(table, [me])}
    found.update((p.pid, p) for p in table.values() if p.pid not in found and carries(p.pid, token))
    return [p for p in found.values() if not p.exited and p.pid not in (me, proctree.guard_pid())]


def pytest_configure(config: pytest.Config) -> None:
    tokens = os.environ.get(SESSION_ENV, "").split()  # a session started by a test keeps its parent's token
    os.environ[SESSION_ENV] = " ".join([*tokens, _token])
    proctree.handle_stop_signals()


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, None, None]:
    result = yield  # every other sessionfinish has run: the session's fixtures are torn down
    left = proctree.wait_gone(session_processes(_token), LEFTOVER_WAIT_S)
    if left:
        lines = [f"pid {p.pid} (parent {p.ppid}): {command_line(p.pid)}" for p in left]
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", f"{len(left)} process(es) started by this session still running", red=True)
            for line in lines:
                reporter.write_line(line)
        for proc in left:
            if proctree.still_running(proc):
                os.kill(proc.pid, signal.SIGKILL)
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result
