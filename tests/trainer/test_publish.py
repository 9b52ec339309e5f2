"""The trainer pushes the finished adapter to spec.output.uri (a real registry) and reports where, pinned by digest;
a registry it cannot push to fails the run with PushFailed (exit code 19, retried by the Job)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from loraplane.api.artifact import file_digests
from loraplane.api.exit_codes import ExitCode
from loraplane.api.oci import OciRef
from loraplane.api.result import RESULT_FILE
from loraplane.serving.oci_store import RegistryAccess, pull
from tests.support.kube import free_port
from tests.support.registry import Registry
from tests.support.trainer import Trainer


def termination(spec: Path) -> dict:
    return dict(json.loads(spec.with_suffix(".term").read_text()))


def test_the_trained_adapter_is_pushed_and_its_digest_reported(
    make_spec: Callable[..., Path], trainer: Trainer, oci_registry: Registry, tmp_path: Path
) -> None:
    spec = make_spec(
        training={"maxSteps": 2},
        outputUri=f"oci://{oci_registry.addr}/adapters/toy:run-7",
        outputPlainHttp=True,
    )
    proc = trainer.run(spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    term = termination(spec)
    ref = OciRef.parse(term["oci_uri"])
    assert ref.tag == "run-7" and ref.digest and ref.digest.startswith("sha256:")

    out = Path(json.loads(spec.read_text())["outputDir"])
    result = pull(ref, tmp_path / "pulled", RegistryAccess(plain_http=True), expect_sha256=term["adapter"]["sha256"])
    assert file_digests(tmp_path / "pulled") == file_digests(out)
    assert not (tmp_path / "pulled" / "checkpoints").exists()  # checkpoints stay in the workspace
    assert result.dataset and result.base_model  # lineage inside the artifact
    assert json.loads((tmp_path / "pulled" / RESULT_FILE).read_text())["name"] == "toy"


def test_an_unreachable_registry_fails_the_run_with_push_failed(
    make_spec: Callable[..., Path], trainer: Trainer
) -> None:
    spec = make_spec(
        training={"maxSteps": 1}, outputUri=f"oci://127.0.0.1:{free_port()}/adapters/toy", outputPlainHttp=True
    )
    proc = trainer.run(spec)
    assert proc.returncode == ExitCode.PUSH_FAILED == 19, proc.stderr[-3000:]
    term = termination(spec)
    assert term["reason"] == "PushFailed" and term["message"].startswith("spec.output.uri: ")
    out = Path(json.loads(spec.read_text())["outputDir"])
    assert (out / RESULT_FILE).is_file()  # the adapter is kept: a retry resumes and pushes again
