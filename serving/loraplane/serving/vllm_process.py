"""Run one local vLLM server from a :class:`~loraplane.serving.vllm_args.VllmLaunch` (local mode and tests)."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from loraplane.serving import proctree
from loraplane.serving.vllm_args import HEALTH_PATH, VllmLaunch

logger = logging.getLogger(__name__)


class VllmStartError(RuntimeError):
    """vLLM exited or did not become healthy in time; the message ends with the tail of its log."""


def log_tail(path: Path, chars: int = 4000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - chars))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


class VllmProcess:
    """A vLLM server process: start (and wait until /health answers), stop, kill, restart."""

    def __init__(self, launch: VllmLaunch, log_path: Path, *, start_timeout: float = 600.0) -> None:
        self.launch = launch
        self.log_path = log_path
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.launch.url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting (pair with :meth:`wait_ready`, e.g. to start replicas concurrently)."""
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # its own process group (with its engine), stopped with us even if we are killed: see proctree
            self._proc = proctree.spawn(
                list(self.launch.argv),
                name="vLLM",
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.launch.env},
            )
        logger.info("started vLLM pid %s on %s (log %s)", self._proc.pid, self.url, self.log_path)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + HEALTH_PATH, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise VllmStartError(f"vLLM exited with {code} before becoming healthy:\n{log_tail(self.log_path)}")
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise VllmStartError(f"vLLM not healthy after {timeout or self.start_timeout:.0f}s:\n{log_tail(self.log_path)}")

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL to its whole tree; the exit code (None if never started).

        SIGTERM goes to the API server alone, as Kubernetes sends it to a container's first process: vLLM
        then drains its answers in flight (--shutdown-timeout) and stops its engine itself. Sent to the
        whole process group, the engine got a second SIGTERM of its own while the API server was stopping
        it, and in one of three tries it stopped stepping: the answer in flight stalled until vLLM killed
        its engine at the end of the drain timeout (tests/serving/test_vllm_shutdown.py).
        """
        # SIGKILL goes to its group and its descendants if it ignored SIGTERM, else to whatever outlived it
        return None if self._proc is None else proctree.stop(self._proc, grace)

    def kill(self) -> int | None:
        """SIGKILL its whole tree at once (a crashed replica)."""
        return None if self._proc is None else proctree.kill(self._proc)

    def restart(self) -> None:
        self.stop()
        self.start()
