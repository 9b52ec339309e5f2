"""Plumbing the benchmarks share: percentiles, a supervised helper process, waiting for it, side-by-side tables,
and the trainer as a child process. Each bench keeps only its comparison."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraplane.serving import proctree

JSON_HEADERS = {"content-type": "application/json"}


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile as the value at the nearest rank (no interpolation); values must not be empty."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class Service:
    """A helper process (a proxy, a router): its own process group (proctree), output to a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], env: dict[str, str], url: str, log_path: Path, cwd: Path
    ) -> None:
        self.name, self.argv, self.env, self.url, self.log_path, self.cwd = name, list(argv), env, url, log_path, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = proctree.spawn(
                self.argv,
                name=self.name,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env={**os.environ, **self.env},
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is not None:
            proctree.stop(self.proc, grace, group=True)  # SIGTERM to the group (its workers), then SIGKILL

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""


def wait_until(what: str, check: Callable[[], bool], timeout: float, service: Service | None = None) -> None:
    """Poll `check` until it holds; fail at the deadline or as soon as `service` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and not service.running():
            raise RuntimeError(f"{service.name} exited before {what}:\n{service.tail()}")
        if check():
            return
        time.sleep(0.5)
    tail = f":\n{service.tail()}" if service is not None else ""
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def http_ok(url: str, body: dict[str, object] | None = None) -> bool:
    """GET (or POST `body` as JSON) answers 200."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=JSON_HEADERS if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class Column:
    """A table column: its title, its width, and the format spec of its values ("" for str())."""

    title: str
    width: int
    spec: str = ""


def table(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> str:
    """A side-by-side table: the first column left-aligned, the others right-aligned; nan shows as "-"."""

    def line(values: Sequence[Any], header: bool) -> str:
        cells = []
        for i, (column, value) in enumerate(zip(columns, values, strict=True)):
            if header or not column.spec:
                text = str(value)
            elif isinstance(value, float) and math.isnan(value):
                text = "-"
            else:
                text = format(value, column.spec)
            cells.append(f"{text:{'<' if i == 0 else '>'}{column.width}}")
        return " ".join(cells)

    return "\n".join([line([c.title for c in columns], True), *(line(row, False) for row in rows)])


def run_trainer(spec: Path, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """`python -m loraplane.trainer --spec SPEC` as a child (proctree: stopped with the bench); kwargs: subprocess's."""
    return proctree.run([sys.executable, "-m", "loraplane.trainer", "--spec", str(spec)], name="trainer", **kwargs)
