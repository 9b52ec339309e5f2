"""The trainer's progress reporter (pod annotation): off outside a pod, throttled, never fatal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from loraplane.api.result import ProgressRecord
from loraplane.trainer.kube_progress import KubeProgress, PodAnnotator


class FakeAnnotator(PodAnnotator):
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    def annotate(self, record: ProgressRecord) -> None:
        if self.fail:
            raise OSError("connection refused")
        self.sent.append(record.dump())


class History:
    history = [ProgressRecord(step=3, total=10, loss=2.0)]  # noqa: RUF012


def test_off_outside_a_pod(tmp_path: Path) -> None:
    assert PodAnnotator.from_env({}) is None
    env = {"LORAPLANE_POD_NAME": "p", "LORAPLANE_POD_NAMESPACE": "ns", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert PodAnnotator.from_env({**env, "LORAPLANE_SERVICEACCOUNT_DIR": str(tmp_path)}) is None  # no token
    (tmp_path / "token").write_text("t")
    annotator = PodAnnotator.from_env({**env, "LORAPLANE_SERVICEACCOUNT_DIR": str(tmp_path)})
    assert annotator is not None and annotator.url == "https://10.0.0.1:443/api/v1/namespaces/ns/pods/p"


def test_throttled_but_every_stage_change_is_sent() -> None:
    fake = FakeAnnotator()
    reporter = KubeProgress(fake, History(), interval=3600)
    reporter.report("training", force=True)
    for _ in range(5):
        reporter.report("training")
    reporter.report("evaluating")
    assert [r["stage"] for r in fake.sent] == ["training", "evaluating"]
    assert fake.sent[0] == {"step": 3, "total": 10, "epoch": 0.0, "loss": 2.0, "stage": "training"}


def test_errors_never_fail_the_run(caplog: pytest.LogCaptureFixture) -> None:
    annotator = FakeAnnotator(fail=True)
    reporter = KubeProgress(annotator, History(), interval=0)
    with caplog.at_level(logging.WARNING, logger="loraplane.trainer.kube_progress"):
        reporter.report("training", force=True)  # logged, not raised
    assert "cannot report progress to the pod annotation: connection refused" in caplog.text
    annotator.fail = False  # the API server is back: the next report goes through
    reporter.report("training")
    assert [r["stage"] for r in annotator.sent] == ["training"]
