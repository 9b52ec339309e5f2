"""Every entry point that starts processes stops all of them, whole (issue 23).

Each test starts the program as a user does, waits until it is up, takes its whole tree from /proc (parent links,
not names), then stops it with SIGTERM (or SIGHUP, SIGINT) or SIGKILLs it, and asserts that no process of that
tree is left after a bounded wait. `loraplane serve` is the one that starts vLLM (its engine is the process that
used to be orphaned); the others are cheaper.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loraplane.api.exit_codes import ExitCode
from loraplane.serving import proctree
from tests.procs.session_cases import CASE_ENV
from tests.procs.support import assert_all_gone, describe, start, tree
from tests.support.kube import REPO, free_port, poll
from tests.support.local_mode import CLI, LoraplaneCli, finetunejob, write_yaml

SIGKILL_GONE_S = proctree.GUARD_GRACE_S + 30  # the guard: SIGTERM, its grace, SIGKILL, the kernel's cleanup


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def exits(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proctree.kill(proc)  # let nothing of it outlive the test
        raise AssertionError(f"still running {timeout:.0f}s after the signal:\n{log_tail(log)}") from None


def grandchildren(procs: list[proctree.Proc], root: int) -> list[proctree.Proc]:
    """The processes of the tree that are not the root's own children (vLLM's engine, for one)."""
    children = {p.pid for p in procs if p.ppid == root}
    return [p for p in procs if p.pid != root and p.pid not in children]


# ------------------------------------------------------------------------------------------------ loraplane serve


@pytest.fixture(scope="module")
def trained_store(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, toy_data: Path, loraplane_cli: LoraplaneCli
) -> Path:
    """A store holding one adapter ("toy") trained by `loraplane run` on the tiny model."""
    store = tmp_path_factory.mktemp("store")
    job = write_yaml(store.parent / "toy.yaml", finetunejob("toy", tiny_model, toy_data))
    proc = loraplane_cli(store, "run", str(job))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return store


Serve = Callable[[Path, Path], tuple[subprocess.Popen[bytes], list[proctree.Proc]]]


@pytest.fixture
def loraplane_serve() -> Serve:
    """`loraplane_serve(store, log)`: `loraplane serve` (vLLM behind the router) once it serves; it and its tree."""
    return start_serve


def start_serve(store: Path, log: Path) -> tuple[subprocess.Popen[bytes], list[proctree.Proc]]:
    """`loraplane serve` once it serves (its table printed, /v1/models answering); it and its tree then."""
    port = free_port()
    proc = start([*CLI, "--store", str(store), "serve", "--port", str(port)], log)

    def serving() -> bool:
        assert proc.poll() is None, f"loraplane serve exited {proc.returncode}:\n{log_tail(log)}"
        if "Serving on" not in log.read_text(errors="replace"):
            return False
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as resp:
            return "toy" in resp.read().decode()

    try:
        poll("loraplane serve to serve", serving, timeout=900, interval=1)
    except BaseException:
        proctree.kill(proc)
        raise
    procs = tree(proc.pid)
    assert grandchildren(procs, proc.pid), f"no vLLM engine below serve: {describe(procs)}"
    return proc, procs


@pytest.mark.slow
def test_serve_stopped_by_sigterm_drains_exits_0_and_leaves_nothing(
    trained_store: Path, tmp_path: Path, loraplane_serve: Serve
) -> None:
    log = tmp_path / "serve.log"
    proc, procs = loraplane_serve(trained_store, log)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert exits(proc, 120, log) == 0, log_tail(log)
    exited = time.monotonic() - signalled
    gone = exited + assert_all_gone(procs, timeout=60)
    print(f"serve: exit 0 {exited:.1f}s after SIGTERM; all {len(procs)} processes gone after {gone:.1f}s")


@pytest.mark.slow
def test_serve_sigkilled_leaves_nothing(trained_store: Path, tmp_path: Path, loraplane_serve: Serve) -> None:
    proc, procs = loraplane_serve(trained_store, tmp_path / "serve.log")
    proc.kill()
    proc.wait()
    gone = assert_all_gone(procs, timeout=SIGKILL_GONE_S)
    print(f"serve: all {len(procs)} processes gone {gone:.1f}s after SIGKILL of serve")


@pytest.mark.slow
def test_a_second_signal_forces_serve_to_stop(trained_store: Path, tmp_path: Path, loraplane_serve: Serve) -> None:
    log = tmp_path / "serve.log"
    proc, procs = loraplane_serve(trained_store, log)
    proc.send_signal(signal.SIGTERM)
    poll("serve to start draining", lambda: "stopping" in log.read_text(errors="replace"), timeout=30)
    assert proc.poll() is None, "serve stopped before a second signal could be sent: nothing was tested"
    forced = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert exits(proc, 10, log) == 128 + signal.SIGTERM
    gone = assert_all_gone(procs, timeout=10)
    print(f"serve: exit {time.monotonic() - forced:.1f}s after the second SIGTERM, all gone {gone:.1f}s later")


# ------------------------------------------------------------------------------------------------ run, demo


LongJob = Callable[[Path], Path]


@pytest.fixture
def long_job(tiny_model: Path, toy_data: Path) -> LongJob:
    """`long_job(directory) -> directory/toy.yaml`: a FineTuneJob that trains for a while and checkpoints every 2
    steps (for the trainer the tests start through `loraplane run`, `demo` or a bench)."""

    def write(directory: Path) -> Path:
        doc = finetunejob("toy", tiny_model, toy_data, epochs=6, checkpointSteps=2)
        return write_yaml(directory / "toy.yaml", doc)

    return write


def training(store: Path) -> bool:
    return any((store / "toy" / "checkpoints").glob("checkpoint-*/LORAPLANE_COMPLETE"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_run_stops_its_trainer(tmp_path: Path, long_job: LongJob, sig: signal.Signals) -> None:
    store, log = tmp_path / "store", tmp_path / "run.log"
    proc = start([*CLI, "--store", str(store), "run", str(long_job(tmp_path))], log)
    poll("a training step (a complete checkpoint)", lambda: training(store), timeout=600)
    procs = tree(proc.pid)
    assert len(procs) >= 3, f"expected loraplane, its guard and the trainer: {describe(procs)}"
    proc.send_signal(sig)
    code = exits(proc, 120, log)
    if sig != signal.SIGKILL:
        assert code == ExitCode.INTERRUPTED, log_tail(log)  # the trainer checkpointed and stopped
    assert_all_gone(procs, timeout=SIGKILL_GONE_S)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_demo_stops_its_trainer(tmp_path: Path, long_job: LongJob, sig: signal.Signals) -> None:
    examples, store, log = tmp_path / "examples", tmp_path / "store", tmp_path / "demo.log"
    examples.mkdir()
    long_job(examples)
    proc = start([*CLI, "--store", str(store), "demo", "--examples", str(examples), "--port", str(free_port())], log)
    poll("a training step (a complete checkpoint)", lambda: training(store), timeout=600)
    procs = tree(proc.pid)
    assert len(procs) >= 3, f"expected loraplane, its guard and the trainer: {describe(procs)}"
    proc.send_signal(sig)
    code = exits(proc, 120, log)
    if sig != signal.SIGKILL:
        assert code == ExitCode.INTERRUPTED, log_tail(log)
    assert_all_gone(procs, timeout=SIGKILL_GONE_S)


# ------------------------------------------------------------------------------------------------ eval, chat


def maps(pid: int, library: str) -> bool:
    """`library` is mapped into `pid` (the program got past its imports)."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_eval_stops(trained_store: Path, tmp_path: Path, sig: signal.Signals) -> None:
    held_out = tmp_path / "held-out.jsonl"
    rows = [{"instruction": f"What is the code for item {i}?", "output": f"E{i % 12}"} for i in range(2000)]
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp_path / "eval.log"
    argv = [*CLI, "--store", str(trained_store), "eval", "toy", "--held-out", f"file://{held_out}"]
    proc = start([*argv, "--max-samples", "2000"], log)
    poll("eval to load torch", lambda: proc.poll() is None and maps(proc.pid, "libtorch_cpu"), timeout=300)
    procs = tree(proc.pid)
    proc.send_signal(sig)
    code = exits(proc, 30, log)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), log_tail(log)
    assert_all_gone(procs, timeout=30)


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A listening socket on loopback that accepts a request and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(120)
        yield server


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_chat_stops_while_waiting_for_an_answer(
    tmp_path: Path, silent_server: socket.socket, sig: signal.Signals
) -> None:
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/v1"
    log = tmp_path / "chat.log"
    proc = start([*CLI, "chat", "--url", url, "model", "Hello?"], log)
    connection, _ = silent_server.accept()
    with connection:
        poll("the request", lambda: connection.recv(1, socket.MSG_PEEK), timeout=60)
        procs = tree(proc.pid)
        proc.send_signal(sig)
        code = exits(proc, 30, log)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), log_tail(log)
    assert_all_gone(procs, timeout=10)


# ------------------------------------------------------------------------------------------------ the router


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`python -m loraplane.serving.router` as a user starts it, once /healthz answers; it and its log."""
    port, log = free_port(), tmp_path / "router.log"
    proc = start(
        [sys.executable, "-m", "loraplane.serving.router"],
        log,
        LORAPLANE_ROUTER_HOST="127.0.0.1",
        LORAPLANE_ROUTER_PORT=str(port),
        LORAPLANE_ROUTER_LOG_FORMAT="plain",
    )

    def healthy() -> bool:
        assert proc.poll() is None, log_tail(log)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        poll("the router's /healthz", healthy, timeout=120)
        yield proc, log
    finally:
        if proc.poll() is None:  # the test failed before it stopped the router
            proctree.kill(proc)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_router_process_stops(router_process: tuple[subprocess.Popen[bytes], Path], sig: signal.Signals) -> None:
    proc, log = router_process
    procs = tree(proc.pid)
    proc.send_signal(sig)
    code = exits(proc, 30, log)
    if sig == signal.SIGHUP:
        assert code == 0, log_tail(log)  # drained like SIGTERM, not ended by the signal's default action
    assert_all_gone(procs, timeout=10)


# ------------------------------------------------------------------------------------------------ test harness


Session = Callable[[str], tuple[subprocess.Popen[bytes], Path, Path]]


@pytest.fixture
def harness_session(tmp_path: Path) -> Session:
    """`harness_session(case)`: a pytest session running one case of tests/procs/session_cases.py (they start the
    router as a process, or leave processes behind); it, its ready file and its log."""

    def session(case: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        ready, log = tmp_path / "ready", tmp_path / "session.log"
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"tests/procs/session_cases.py::{case}"]
        proc = start(argv, log, **{CASE_ENV: str(ready)})
        return proc, ready, log

    return session


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_test_session_stops_its_harness_processes(harness_session: Session, sig: signal.Signals) -> None:
    proc, ready, log = harness_session("test_router_until_stopped")
    poll("the session's router", lambda: proc.poll() is None and ready.exists(), timeout=300)
    procs = tree(proc.pid)
    assert int(ready.read_text()) in {p.pid for p in procs}, describe(procs)
    proc.send_signal(sig)
    code = exits(proc, 120, log)
    if sig == signal.SIGTERM:
        assert code == pytest.ExitCode.INTERRUPTED, log_tail(log)  # torn down as on Ctrl-C
        assert "still running" not in log.read_text()
    assert_all_gone(procs, timeout=SIGKILL_GONE_S)


@pytest.mark.slow
def test_a_test_session_fails_when_a_process_it_started_outlives_it(harness_session: Session) -> None:
    proc, _, log = harness_session("test_leaves_processes_behind")
    code = exits(proc, 300, log)
    out = log.read_text()
    assert code == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    assert "2 process(es) started by this session still running" in out, out[-3000:]
    assert "sleep 1000" in out and "sleep 1001" in out  # the child, and the grandchild re-parented to init


# ------------------------------------------------------------------------------------------------ a bench


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_bench_stops_its_trainer(tmp_path: Path, long_job: LongJob, sig: signal.Signals) -> None:
    """bench/general_mix.py on the tiny model: its trainer child stops with it."""
    job = long_job(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "bench/general_mix.py", "--job", str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "LORAPLANE_CACHE": str(tmp_path / "cache")},
    )
    assert proc.stdout is not None
    seen = b""
    for line in proc.stdout:  # the trainer's progress lines come through the bench's stdout
        seen += line
        if line.startswith(b"LORAPLANE_PROGRESS "):
            break
    assert proc.poll() is None, f"the bench exited {proc.returncode}:\n{seen.decode(errors='replace')[-3000:]}"
    procs = tree(proc.pid)
    assert len(procs) >= 3, f"expected the bench, its guard and the trainer: {describe(procs)}"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig, out.decode(errors="replace")[-3000:]
    assert_all_gone(procs, timeout=SIGKILL_GONE_S)
