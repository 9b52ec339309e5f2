"""What a training run reports, as typed models: `result.json`, the termination summary, progress records.

The trainer writes them; the operator (termination message, pod annotation), local mode (progress lines,
the store) and the adapter manager (file digests) read them with the same models. JSON keys are
snake_case. Reading ignores unknown keys, so an adapter written by a newer trainer still lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

RESULT_FILE = "result.json"
MAX_SUMMARY_BYTES = 4096  # the kubelet keeps at most 4 KiB of a container's termination message
SUMMARY_MESSAGE_CHARS = 1024
PROGRESS_LINE_PREFIX = "LORAPLANE_PROGRESS "  # one progress record per line on the trainer's stdout
PROGRESS_ANNOTATION = "loraplane.io/progress"  # the trainer pod's latest progress record, read by the operator

Stage = Literal["downloading", "training", "evaluating"]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def dump(self) -> dict[str, Any]:
        """The JSON form without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True)

    def compact(self) -> str:
        return json.dumps(self.dump(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def parse(cls, text: str | None) -> Self | None:
        """The model from JSON text, or None when the text is absent or not this document."""
        if not text:
            return None
        try:
            return cls.model_validate_json(text)
        except (ValidationError, ValueError):
            return None


class ProgressRecord(_Doc):
    """One progress report: a `LORAPLANE_PROGRESS` line, the pod annotation, an entry of the loss history."""

    step: int = 0
    total: int = 0
    epoch: float = 0.0
    loss: float | None = None
    learning_rate: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: int | None = None
    stage: Stage | None = Field(None, description="Set on the pod annotation only.")

    def line(self) -> str:
        return PROGRESS_LINE_PREFIX + self.compact()

    @classmethod
    def from_line(cls, line: str) -> ProgressRecord | None:
        """The record of one `LORAPLANE_PROGRESS {...}` line; None for any other line."""
        if not line.startswith(PROGRESS_LINE_PREFIX):
            return None
        return cls.parse(line[len(PROGRESS_LINE_PREFIX) :].strip())


class AdapterFiles(_Doc):
    """The adapter directory and the digest of every file in it."""

    path: str = ""
    sha256: str = Field(description="One digest naming the version (loraplane.api.artifact.adapter_digest).")
    size_bytes: int = 0
    files: dict[str, str] = Field(default_factory=dict, description="Relative path -> sha256 (not in the summary).")
    target_modules: list[str] | str | None = None
    r: int | None = None
    alpha: float | None = None


class BaseModelInfo(_Doc):
    uri: str
    revision: str | None = None
    family: str | None = None
    path: str = ""


class DatasetInfo(_Doc):
    uri: str
    sha256: str
    records: int = 0


class Sample(_Doc):
    """One held-out example with both answers (the first few are kept for people to read)."""

    prompt: str
    answer: str
    base: str
    adapter: str


class Evaluation(_Doc):
    """Base vs adapter on the held-out set, the gate, and general-ability retention."""

    metric: str
    base_score: float
    adapter_score: float
    examples: int = 0
    base_loss: float | None = None
    base_perplexity: float | None = None
    adapter_loss: float | None = None
    adapter_perplexity: float | None = None
    passed: bool = True
    samples: list[Sample] = Field(default_factory=list, description="Not in the summary.")
    general_base_score: float | None = None
    general_adapter_score: float | None = None


class Outcome(_Doc):
    """How a run ended: the part every result has, failed or not."""

    ok: bool
    code: int
    reason: str
    message: str = ""

    def summary(self) -> ResultSummary:
        """What the termination message carries of this outcome."""
        return ResultSummary(
            ok=self.ok, code=self.code, reason=self.reason, message=self.message[:SUMMARY_MESSAGE_CHARS]
        )


class ResultSummary(Outcome):
    """The trainer's termination message: the result without file lists and samples, at most 4 KiB."""

    adapter: AdapterFiles | None = None
    evaluation: Evaluation | None = None
    metrics: dict[str, int | float] = Field(default_factory=dict)
    trainable_params: int | None = None
    oci_uri: str | None = Field(None, description="Where the adapter was pushed, pinned by manifest digest.")
    s3_uri: str | None = Field(None, description="Where the adapter was pushed to S3, pinned by the adapter sha256.")

    def encode(self) -> str:
        """The compact JSON, shortened until it fits in MAX_SUMMARY_BYTES (metrics go first, then detail)."""
        text = self.compact()
        summary = self
        while len(text.encode()) > MAX_SUMMARY_BYTES and summary.metrics:
            summary = summary.model_copy(update={"metrics": dict(list(summary.metrics.items())[:-1])})
            text = summary.compact()
        if len(text.encode()) > MAX_SUMMARY_BYTES:
            summary = summary.model_copy(update={"message": summary.message[:200], "evaluation": None})
            text = summary.compact()
        return text

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        for part, heavy in (("adapter", "files"), ("evaluation", "samples")):
            if part in data:
                data[part].pop(heavy, None)
        return data


class TrainingResult(Outcome):
    """result.json: next to the adapter files, and inside the artifact wherever it travels."""

    name: str = ""
    adapter: AdapterFiles | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    base_model: BaseModelInfo | None = None
    dataset: DatasetInfo | None = None
    spec_sha256: str = ""
    metrics: dict[str, int | float] = Field(default_factory=dict)
    evaluation: Evaluation | None = None
    durations: dict[str, float] = Field(default_factory=dict)
    loss_history: list[ProgressRecord] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """A finished, servable adapter (the run succeeded and recorded its files)."""
        return self.ok and self.adapter is not None

    def summary(self) -> ResultSummary:
        return ResultSummary(
            ok=self.ok,
            code=self.code,
            reason=self.reason,
            message=self.message[:SUMMARY_MESSAGE_CHARS],
            adapter=self.adapter,
            evaluation=self.evaluation,
            metrics=self.metrics,
            trainable_params=self.trainable_params,
        )

    def write(self, adapter_dir: Path) -> Path:
        """result.json in `adapter_dir`, replaced atomically."""
        path = adapter_dir / RESULT_FILE
        tmp = path.with_suffix(".json.tmp")
        text = json.dumps(self.dump(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, adapter_dir: Path) -> TrainingResult | None:
        """The result.json of `adapter_dir`, or None when it has none (still training) or it is unreadable."""
        try:
            text = (adapter_dir / RESULT_FILE).read_text(encoding="utf-8")
        except OSError:
            return None
        return cls.parse(text)
