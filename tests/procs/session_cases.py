"""Test sessions that tests/procs/test_entry_points.py starts as separate pytest runs (not collected on their own:
the file name does not start with test_). Each waits for LORAPLANE_SESSION_CASE (a file to write) to be set."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ms_helpers import RouterProcess

CASE_ENV = "LORAPLANE_SESSION_CASE"


@pytest.fixture
def ready_file() -> Path:
    if CASE_ENV not in os.environ:
        pytest.skip(f"run by tests/procs/test_entry_points.py (needs {CASE_ENV})")
    return Path(os.environ[CASE_ENV])


@pytest.fixture
def router(tmp_path: Path) -> Iterator[RouterProcess]:
    """The harness's router process, stopped at teardown (the graceful path a stop signal must take)."""
    proc = RouterProcess(tmp_path / "router.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_router_until_stopped(router: RouterProcess, ready_file: Path) -> None:
    """Holds the harness's router until the session is stopped from outside."""
    assert router.proc is not None
    ready_file.write_text(str(router.proc.pid))
    threading.Event().wait(timeout=600)


def test_leaves_processes_behind(ready_file: Path) -> None:
    """Starts a child and a detached grandchild (re-parented to init) and never stops them."""
    subprocess.Popen(["sleep", "1000"], start_new_session=True)
    subprocess.run(["sh", "-c", "setsid sleep 1001 >/dev/null 2>&1 &"], check=True)
    ready_file.write_text("left")
