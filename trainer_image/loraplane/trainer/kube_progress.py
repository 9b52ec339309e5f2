"""Progress on a cluster: the trainer patches the annotation `loraplane.io/progress` on its own pod.

The operator reads the annotation when it observes the pod and maps it to `status.progress` (and the
Downloading/Training/Evaluating phase). Standard library only: the pod's ServiceAccount token, the
API server from KUBERNETES_SERVICE_HOST/PORT, the pod from the downward API (LORAPLANE_POD_NAME and
LORAPLANE_POD_NAMESPACE). Outside a pod nothing is reported. Reporting never fails a run: errors are
logged and the next report tries again. At most one patch every `interval` seconds (default 15),
plus one at every stage change.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from loraplane.api.result import PROGRESS_ANNOTATION, ProgressRecord

logger = logging.getLogger(__name__)
DEFAULT_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class PodAnnotator:
    """Merge-patches one annotation of one pod through the API server."""

    def __init__(self, host: str, namespace: str, pod: str, token_dir: Path) -> None:
        self.url = f"{host}/api/v1/namespaces/{namespace}/pods/{pod}"
        self.token_path = token_dir / "token"
        ca = token_dir / "ca.crt"
        self.context = ssl.create_default_context(cafile=str(ca)) if ca.exists() else ssl.create_default_context()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PodAnnotator | None:
        env = dict(os.environ if env is None else env)
        pod, namespace = env.get("LORAPLANE_POD_NAME"), env.get("LORAPLANE_POD_NAMESPACE")
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        token_dir = Path(env.get("LORAPLANE_SERVICEACCOUNT_DIR", DEFAULT_TOKEN_DIR))
        if not (pod and namespace and host and (token_dir / "token").exists()):
            return None
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", namespace, pod, token_dir)

    def annotate(self, record: ProgressRecord) -> None:
        body = json.dumps({"metadata": {"annotations": {PROGRESS_ANNOTATION: record.compact()}}})
        request = urllib.request.Request(
            self.url,
            data=body.encode(),
            method="PATCH",
            headers={
                "Content-Type": "application/merge-patch+json",
                "Authorization": f"Bearer {self.token_path.read_text().strip()}",
            },
        )
        with urllib.request.urlopen(request, timeout=5, context=self.context) as resp:
            resp.read()


class KubeProgress(TrainerCallback):
    """Reports the latest progress record (from the ProgressCallback) and the stage to the pod annotation."""

    def __init__(self, annotator: PodAnnotator, progress: Any, *, interval: float = 15.0) -> None:
        self.annotator = annotator
        self.progress = progress
        self.interval = interval
        self.last = 0.0
        self.stage = "downloading"

    def report(self, stage: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and stage == self.stage and now - self.last < self.interval:
            return
        history = getattr(self.progress, "history", None) or [ProgressRecord()]
        record = history[-1].model_copy(update={"stage": stage})
        self.stage, self.last = stage, now
        try:
            self.annotator.annotate(record)
        except (OSError, ValueError) as exc:
            logger.warning("cannot report progress to the pod annotation: %s", exc)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if state.is_world_process_zero:
            self.report("training", force=True)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if state.is_world_process_zero:
            self.report("training")

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if state.is_world_process_zero:
            self.report("evaluating", force=True)


def reporters(progress: Any) -> list[TrainerCallback]:
    """The callbacks to add when running in a pod (none elsewhere)."""
    annotator = PodAnnotator.from_env()
    if annotator is None:
        return []
    interval = float(os.environ.get("LORAPLANE_PROGRESS_INTERVAL", "15"))
    return [KubeProgress(annotator, progress, interval=interval)]
