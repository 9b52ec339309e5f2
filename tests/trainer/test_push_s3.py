"""The trainer pushes the finished adapter to spec.output.uri: s3://BUCKET/PREFIX (a real versitygw on loopback),
configured only through the environment the operator gives the training pod, and reports where, pinned by the
adapter sha256; a store that refuses the login fails the push with PushFailed naming spec.output.uri."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from loraplane.api.artifact import describe_adapter
from loraplane.api.exit_codes import ExitCode
from loraplane.api.finetunejob import FineTuneJobSpec
from loraplane.api.result import RESULT_FILE, BaseModelInfo, ResultSummary, TrainingResult
from loraplane.api.s3 import S3_AUTH_DIR, S3Ref
from loraplane.api.trainer_spec import Mounts, TrainerSpec
from loraplane.operator.finetunejob import builders
from loraplane.operator.owner import Owner
from loraplane.operator.settings import OperatorSettings
from loraplane.serving.s3_store import pull
from loraplane.trainer.errors import PushFailed
from loraplane.trainer.train import publish, summary_field
from tests.support.s3 import S3Server, s3_server

OWNER = Owner(kind="FineTuneJob", name="med-v1", namespace="team-a", uid="u-1")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("versitygw")) as server:
        yield server


def adapter_dir(directory: Path, *, seed: int) -> Path:
    """What a finished run leaves in its output directory: PEFT-named files (random weights: only the bytes and
    digests matter to a push), result.json listing them, and checkpoints/ (never pushed)."""
    rng = random.Random(seed)
    (directory / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (directory / "checkpoints" / "checkpoint-5" / "optimizer.pt").write_bytes(rng.randbytes(1000))
    (directory / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA", "seed": seed}))
    (directory / "adapter_model.safetensors").write_bytes(rng.randbytes(200_000))
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    TrainingResult(
        ok=True,
        code=0,
        reason="Succeeded",
        name=OWNER.name,
        adapter=describe_adapter(directory, r=8),
        base_model=BaseModelInfo(uri="hf://HuggingFaceTB/SmolLM2-135M-Instruct"),
    ).write(directory)
    return directory


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` except checkpoints, by relative path, with its bytes."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.relative_to(directory).parts[0] != "checkpoints"
    }


def as_in_the_pod(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, secret_key: str | None = None
) -> TrainerSpec:
    """The training spec and environment the operator gives the training pod of a FineTuneJob pushing to
    s3://BUCKET/adapters/medical: the container's AWS_* variables as rendered, the login Secret's `credentials`
    key where the kubelet would mount it (relocated under tmp_path), nothing else from this process."""
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"},
            "dataset": {"uri": "builtin://medical-en"},
            "output": {
                "uri": f"s3://{s3.bucket}/adapters/medical",
                "s3": {"endpoint": s3.endpoint, "region": s3.region, "credentialsSecret": "s3-login"},
            },
        }
    )
    job = builders.training_job(OWNER, spec, OperatorSettings(priority=1, trainer_image="trainer:test"))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    mount = tmp_path / "pod" / S3_AUTH_DIR.lstrip("/")
    s3.credentials_file(mount / "credentials", secret_key=secret_key)
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.aws of whoever runs the tests
    aws = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("AWS_")}
    assert set(aws) == {"AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL_S3", "AWS_REGION"}
    for name, value in aws.items():
        monkeypatch.setenv(name, value.replace(S3_AUTH_DIR, str(mount)))
    out = adapter_dir(tmp_path / "out", seed=7)
    return TrainerSpec.from_finetunejob(
        OWNER.name, OWNER.namespace, spec, output_dir=str(out), cache_dir=str(tmp_path / "cache"), mounts=Mounts()
    )


def test_the_adapter_is_pushed_to_its_runs_prefix_and_reported_pinned(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = as_in_the_pod(s3, tmp_path, monkeypatch)
    out = Path(spec.output_dir)
    result = TrainingResult.read(out)
    assert result is not None and result.adapter is not None

    pushed = publish(spec)
    assert pushed == f"s3://{s3.bucket}/adapters/medical/{OWNER.name}@sha256:{result.adapter.sha256}"
    assert summary_field(spec.output_uri or "") == "s3_uri"
    summary = ResultSummary(ok=True, code=0, reason="Succeeded").model_copy(update={summary_field(pushed): pushed})
    assert json.loads(summary.encode())["s3_uri"] == pushed and summary.oci_uri is None

    ref = S3Ref.parse(pushed)
    pulled = pull(ref, tmp_path / "pulled", s3.access(), expect_sha256=ref.sha256)
    assert tree(tmp_path / "pulled") == tree(out)  # byte for byte, result.json included; no checkpoints
    assert pulled.name == OWNER.name and (tmp_path / "pulled" / RESULT_FILE).is_file()
    listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="adapters/medical/")
    assert sorted(o["Key"] for o in listing["Contents"]) == [f"adapters/medical/{OWNER.name}/{n}" for n in tree(out)]


def test_a_refused_login_fails_the_push_naming_the_field(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = as_in_the_pod(s3, tmp_path, monkeypatch, secret_key="not-the-secret")
    with pytest.raises(PushFailed) as failed:
        publish(spec)
    assert failed.value.code is ExitCode.PUSH_FAILED and failed.value.reason == "PushFailed"  # exit code 19
    message = str(failed.value)
    assert message.startswith("spec.output.uri: push to s3://"), message
    assert "check the S3 credentials" in message
    assert (Path(spec.output_dir) / RESULT_FILE).is_file()  # the adapter stays: a retry pushes again


def test_an_unreadable_login_fails_the_push_naming_the_field(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = as_in_the_pod(s3, tmp_path, monkeypatch)
    credentials = Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"])
    credentials.write_text("[push]\naws_access_key_id = x\naws_secret_access_key = y\n")  # no [default]
    with pytest.raises(PushFailed, match=r"^spec\.output\.uri: .*no \[default\]"):
        publish(spec)
