"""Progress reporting: one JSON line per log step on stdout (for local mode), a bar on a terminal.

Line format (:class:`loraplane.api.result.ProgressRecord`, parsed by local mode):
    LORAPLANE_PROGRESS {"step":12,"total":60,"epoch":0.6,"loss":1.93,"learning_rate":1.8e-05,
                        "tokens_per_second":231.5,"eta_seconds":95}
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from loraplane.api.result import ProgressRecord

logger = logging.getLogger(__name__)
COMPLETE_MARKER = "LORAPLANE_COMPLETE"


def progress_record(state: TrainerState, elapsed: float, tokens: float, logs: dict[str, Any] | None) -> ProgressRecord:
    """The machine-readable progress of a run (pure)."""
    step, total = state.global_step, state.max_steps
    rate = step / elapsed if elapsed > 0 and step else 0.0
    logs = logs or {}
    return ProgressRecord(
        step=step,
        total=total,
        epoch=round(state.epoch or 0.0, 3),
        tokens_per_second=round(tokens / elapsed, 1) if elapsed > 0 else 0.0,
        eta_seconds=int((total - step) / rate) if rate > 0 else None,
        loss=round(float(logs["loss"]), 4) if "loss" in logs else None,
        learning_rate=float(logs["learning_rate"]) if "learning_rate" in logs else None,
        eval_loss=round(float(logs["eval_loss"]), 4) if "eval_loss" in logs else None,
    )


class ProgressCallback(TrainerCallback):
    """Emits progress lines on rank 0 and draws a rich progress bar when stderr is a terminal."""

    def __init__(self, *, emit_lines: bool = True, bar: bool | None = None) -> None:
        self.emit_lines = emit_lines
        self.bar_wanted = sys.stderr.isatty() if bar is None else bar
        self.start = 0.0
        self.start_step = 0
        self.start_tokens = 0.0
        self.history: list[ProgressRecord] = []
        self._progress: Any = None
        self._task: Any = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.start, self.start_step = time.monotonic(), state.global_step
        self.start_tokens = float(state.num_input_tokens_seen or 0)
        if self.bar_wanted and state.is_world_process_zero:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
                console=Console(stderr=True),  # the terminal that asked for it; stdout carries the lines
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def _record(self, state: TrainerState, logs: dict[str, Any] | None) -> ProgressRecord:
        elapsed = time.monotonic() - self.start
        tokens = float(state.num_input_tokens_seen or 0) - self.start_tokens
        shifted = TrainerState(
            global_step=state.global_step - self.start_step, max_steps=state.max_steps - self.start_step
        )
        rec = progress_record(shifted, elapsed, tokens, logs)
        return rec.model_copy(
            update={"step": state.global_step, "total": state.max_steps, "epoch": round(state.epoch or 0.0, 3)}
        )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        rec = self._record(state, logs)
        self.history.append(rec)
        if self.emit_lines:
            sys.stdout.write(rec.line() + "\n")
            sys.stdout.flush()
        if self._progress is not None and rec.loss is not None:
            self._progress.update(self._task, info=f"loss {rec.loss:.3f}  {rec.tokens_per_second or 0:.0f} tok/s")

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class GracefulStop(TrainerCallback):
    """SIGTERM/SIGINT: save a checkpoint at the end of the current step, then stop (exit code 18)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = True
        logger.warning("received %s: checkpointing at the end of this step, then stopping", signal.Signals(signum).name)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class CompleteMarker(TrainerCallback):
    """Marks a checkpoint complete once the Trainer has written all of it (resume only from marked ones)."""

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if state.is_world_process_zero:
            ckpt = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / COMPLETE_MARKER).write_text(str(state.global_step))


def last_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint-N directory that was completely written."""
    done = []
    for path in checkpoints_dir.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and (path / COMPLETE_MARKER).exists():
            done.append((int(suffix), path))
    return max(done)[1] if done else None
