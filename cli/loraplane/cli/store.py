"""The local adapter store: one directory per adapter (PEFT files, result.json, checkpoints while training).

Local mode's counterpart of the cluster's adapter claim: `loraplane run` writes `<store>/<name>/` exactly as
the trainer writes it on the claim (so its files verify against result.json), and keeps its own records of
the run (rendered spec, log, termination summary) in `<store>/.runs/<name>/`. `serve`, `list` and `eval`
read it. Default `~/.local/share/loraplane/adapters` (env `LORAPLANE_STORE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loraplane.api.result import Evaluation, TrainingResult


def default_store() -> Path:
    return Path(os.environ.get("LORAPLANE_STORE", "~/.local/share/loraplane/adapters")).expanduser()


def default_cache() -> Path:
    """Model downloads and dequantized GGUF checkpoints; shared with the test suite and the demo."""
    root = Path(os.environ.get("LORAPLANE_CACHE", "~/.cache/loraplane")).expanduser()
    return root / "models"


@dataclass(frozen=True)
class StoredAdapter:
    """One entry of the store; `result` is None while it is still training (or was interrupted)."""

    name: str
    path: Path
    result: TrainingResult | None

    @property
    def ready(self) -> bool:
        return self.result is not None and self.result.ready

    @property
    def sha256(self) -> str:
        return self.result.adapter.sha256 if self.result and self.result.ready and self.result.adapter else ""

    @property
    def base_model_path(self) -> str:
        return self.result.base_model.path if self.ready and self.result and self.result.base_model else ""

    @property
    def base_model_uri(self) -> str:
        return self.result.base_model.uri if self.ready and self.result and self.result.base_model else ""

    @property
    def evaluation(self) -> Evaluation | None:
        return self.result.evaluation if self.result else None


class UnknownAdapter(LookupError):
    """No ready adapter of that name in the store."""


class AdapterStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def dir_for(self, name: str) -> Path:
        return self.root / name

    def run_dir(self, name: str) -> Path:
        """Local mode's records of a run, outside the adapter directory."""
        return self.root / ".runs" / name

    def serve_logs(self) -> Path:
        """Logs of `loraplane serve` (vLLM); `_` keeps it apart from any FineTuneJob name."""
        return self.root / ".runs" / "_serve"

    def entry(self, path: Path) -> StoredAdapter:
        return StoredAdapter(path.name, path, TrainingResult.read(path))

    def entries(self) -> list[StoredAdapter]:
        if not self.root.is_dir():
            return []
        return [self.entry(p) for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")]

    def ready(self) -> list[StoredAdapter]:
        return [a for a in self.entries() if a.ready]

    def get(self, name: str) -> StoredAdapter:
        path = self.dir_for(name)
        entry = self.entry(path) if path.is_dir() else None
        if entry is None or not entry.ready:
            known = ", ".join(a.name for a in self.ready()) or "none"
            state = "is not finished (run it again to resume)" if entry else "does not exist"
            raise UnknownAdapter(f"adapter {name!r} {state} in {self.root}; ready adapters: {known}")
        return entry
