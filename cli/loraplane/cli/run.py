"""`loraplane run FILE.yaml`: one FineTuneJob on this machine, with a progress bar.

The YAML is rendered into the same training spec the operator puts in the ConfigMap
(`TrainerSpec.from_finetunejob`) and the trainer runs as a child process, exactly as in the pod: same
command, same exit codes, same result.json. Its log goes to `<store>/.runs/<name>/train.log`; the bar is
drawn from the machine-readable progress lines. Ctrl-C asks the trainer to checkpoint and stop
(exit 18); the same `run` again resumes from that checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from loraplane.api.artifact import sha256_json
from loraplane.api.exit_codes import ExitCode
from loraplane.api.finetunejob import FineTuneJobSpec
from loraplane.api.result import ProgressRecord, ResultSummary
from loraplane.api.trainer_spec import Mounts, TrainerSpec
from loraplane.cli.manifest import load_finetunejob
from loraplane.cli.store import AdapterStore
from loraplane.serving import proctree

SPEC_FILE = "trainer-spec.json"
LOG_FILE = "train.log"
TERMINATION_FILE = "termination.json"


def local_trainer_spec(
    name: str, spec: FineTuneJobSpec, *, store: AdapterStore, cache: Path, pvc_root: Path
) -> TrainerSpec:
    """The training spec for local mode: output in the store, pvc://CLAIM/PATH read from PVC_ROOT/CLAIM/PATH."""
    return TrainerSpec.from_finetunejob(
        name,
        "local",
        spec,
        output_dir=str(store.dir_for(name)),
        cache_dir=str(cache),
        mounts=Mounts(pvc_root=str(pvc_root), configmap_root=str(pvc_root / "configmaps")),
    )


def describe(record: ProgressRecord) -> str:
    parts = [f"epoch {record.epoch:.2f}"]
    if record.loss is not None:
        parts.append(f"loss {record.loss:.3f}")
    parts.append(f"{record.tokens_per_second or 0:.0f} tok/s")
    return "  ".join(parts)


@dataclass
class RunOutcome:
    name: str
    code: int
    adapter_dir: Path
    message: str = ""


def _follow(lines: Iterable[str], progress: Progress, task: Any, log: TextIO, console: Console) -> None:
    """Move the bar with each progress line; once training is done, show that evaluation is running.

    Without a terminal (CI, `| tee`) the bar cannot redraw, so a plain line is printed every 30 s instead.
    """
    last_line = time.monotonic()
    for line in lines:
        record = ProgressRecord.from_line(line)
        if record is None:
            log.write(line)
            continue
        total, step = record.total, record.step
        progress.update(task, total=total or None, completed=step, info=describe(record))
        if not console.is_terminal and (time.monotonic() - last_line >= 30 or step >= total):
            eta = record.eta_seconds
            console.print(f"  step {step}/{total}  {describe(record)}" + (f"  eta {eta}s" if eta else ""))
            last_line = time.monotonic()
        if total and step >= total:
            progress.update(task, description="evaluating base vs adapter")


def run_job(
    path: Path,
    *,
    store: AdapterStore,
    cache: Path,
    pvc_root: Path,
    console: Console,
    force: bool = False,
    python: str = sys.executable,
) -> RunOutcome:
    """Train the FineTuneJob in `path` into the store; exit code is the trainer's (see loraplane.api.exit_codes).

    Like `kubectl apply`, running an unchanged spec again is a no-op: an adapter whose result.json records
    the same spec hash is kept (unless `force`).
    """
    name, spec = load_finetunejob(path)
    trainer_spec = local_trainer_spec(name, spec, store=store, cache=cache, pvc_root=pvc_root)
    out = store.dir_for(name)
    existing = store.entry(out) if out.is_dir() else None
    rendered = json.loads(trainer_spec.model_dump_json(by_alias=True, exclude_none=True))
    if not force and existing and existing.result and existing.result.spec_sha256 == sha256_json(rendered):
        console.print(f"[bold]{name}[/]: up to date (sha256 {existing.sha256[:12]}); --force trains it again")
        return RunOutcome(name, ExitCode.SUCCESS, out)
    out.mkdir(parents=True, exist_ok=True)
    records = store.run_dir(name)
    records.mkdir(parents=True, exist_ok=True)
    spec_file = records / SPEC_FILE
    spec_file.write_text(trainer_spec.model_dump_json(by_alias=True, exclude_none=True, indent=2), encoding="utf-8")
    termination = records / TERMINATION_FILE
    termination.unlink(missing_ok=True)
    resuming = (out / "checkpoints").is_dir()
    console.print(
        f"[bold]{name}[/]: {spec.base_model.uri} + {spec.dataset.uri}"
        f"{' (resuming from its checkpoint)' if resuming else ''}; log: {records / LOG_FILE}"
    )
    cmd = [python, "-m", "loraplane.trainer", "--spec", str(spec_file), "--termination-log", str(termination)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with (records / LOG_FILE).open("a", encoding="utf-8") as log, progress_bar(console) as progress:
        task = progress.add_task(f"training {name}", total=None, info="loading model and data")
        proc = proctree.spawn(cmd, name="trainer", stdout=subprocess.PIPE, stderr=log, text=True, env=env, bufsize=1)
        assert proc.stdout is not None
        try:
            _follow(proc.stdout, progress, task, log, console)
            code = proctree.wait(proc)
        except KeyboardInterrupt:
            progress.update(task, description="stopping: writing a checkpoint")
            try:  # the trainer checkpoints at the end of the step and exits 18
                code = proctree.stop(proc, None)
            except KeyboardInterrupt:  # a second Ctrl-C (the CLI's signal handler forces it before this)
                code = proctree.kill(proc)
        except BaseException:
            proctree.stop(proc, 60)
            raise
    summary = ResultSummary.parse(termination.read_text(encoding="utf-8")) if termination.is_file() else None
    outcome = RunOutcome(name, code, out, summary.message if summary else "")
    print_outcome(outcome, records / LOG_FILE, console)
    return outcome


def progress_bar(console: Console) -> Progress:
    """The training bar: steps done of all, the trainer's latest numbers (`describe`), time spent and left."""
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, transient=False)


def print_outcome(outcome: RunOutcome, log: Path, console: Console) -> None:
    """What an interrupted or failed run tells the user (a success is reported by the caller)."""
    name, code, message = outcome.name, outcome.code, outcome.message
    if code == ExitCode.INTERRUPTED:
        console.print(f"[yellow]{name}: interrupted ({message or 'checkpoint saved'})[/]")
        console.print("run the same command again to resume from the checkpoint")
    elif code != ExitCode.SUCCESS:
        reason = ExitCode(code).name if code in ExitCode._value2member_map_ else f"exit code {code}"
        console.print(f"[red]{name} failed ({reason}): {message or 'see ' + str(log)}[/]")
