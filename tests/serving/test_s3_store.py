"""Adapters in an S3-compatible store against a real server (versitygw, SigV4 on loopback): push, pull pinned to
an adapter version, and every way a pulled adapter is refused before anything could load it."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from loraplane.api.artifact import adapter_digest, describe_adapter
from loraplane.api.result import RESULT_FILE, AdapterFiles, BaseModelInfo, TrainingResult
from loraplane.api.s3 import S3Ref
from loraplane.serving.oci_store import ArtifactRefused, StoreError  # one error taxonomy for both stores
from loraplane.serving.s3_store import S3Access, pull, push
from tests.support.s3 import S3Server, s3_server
from tests.support.serving import tamper


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("versitygw")) as server:
        yield server


def make_adapter(directory: Path, *, seed: int, base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct") -> Path:
    """An adapter directory `verify` accepts: PEFT-named files (the weights random bytes: only digests are
    checked here), one in a subdirectory, and a result.json listing them."""
    rng = random.Random(seed)
    (directory / "tokenizer").mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA", "seed": seed}))
    (directory / "adapter_model.safetensors").write_bytes(rng.randbytes(300_000))  # > one 64 KiB read
    (directory / "tokenizer" / "tokenizer.json").write_text(json.dumps({"version": "1.0", "seed": seed}))
    TrainingResult(
        ok=True,
        code=0,
        reason="Succeeded",
        name=f"adapter-{seed}",
        adapter=describe_adapter(directory, r=8),
        base_model=BaseModelInfo(uri=base_model),
    ).write(directory)
    return directory


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by relative path, with its bytes."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def keys(s3: S3Server, prefix: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix + "/")
    return sorted(x["Key"] for x in listing.get("Contents", []))


def leftovers(parent: Path) -> list[str]:
    """Staging directories `pull` left behind (hidden, named after the destination)."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".")] if parent.exists() else []


def adapter_sha256(directory: Path) -> str:
    result = TrainingResult.read(directory)
    assert result and result.adapter
    return result.adapter.sha256


def put_result(s3: S3Server, prefix: str, files: dict[str, str]) -> None:
    """A result.json written straight into the bucket (another client's), consistent with its own file list."""
    adapter = AdapterFiles(sha256=adapter_digest(files), files=files)
    doc = TrainingResult(ok=True, code=0, reason="Succeeded", adapter=adapter).compact()
    s3.client().put_object(Bucket=s3.bucket, Key=f"{prefix}/{RESULT_FILE}", Body=doc.encode())


def test_push_then_pull_gives_the_same_directory_byte_for_byte(s3: S3Server, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "medical", seed=1)
    (adapter / "checkpoints").mkdir()  # training leftovers are not part of the adapter
    (adapter / "checkpoints" / "step-10.bin").write_bytes(b"x" * 10)
    ref = S3Ref.parse(f"s3://{s3.bucket}/medical/run-1")

    sha = push(adapter, ref, s3.access())
    assert sha == adapter_sha256(adapter)
    assert keys(s3, "medical/run-1") == [
        "medical/run-1/adapter_config.json",
        "medical/run-1/adapter_model.safetensors",
        "medical/run-1/result.json",
        "medical/run-1/tokenizer/tokenizer.json",
    ]

    dest = tmp_path / "cache" / "medical"
    result = pull(ref, dest, s3.access(), expect_sha256=sha)
    assert result.adapter and result.adapter.sha256 == sha
    expected = {k: v for k, v in tree(adapter).items() if not k.startswith("checkpoints/")}
    assert tree(dest) == expected
    assert leftovers(dest.parent) == []

    # The way a pod gets it: a mounted credentials file and the endpoint in the environment.
    creds = s3.credentials_file(tmp_path / "secret" / "credentials")
    access = S3Access.from_env({"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_ENDPOINT_URL_S3": s3.endpoint})
    assert access == s3.access()
    assert s3.secret_key not in repr(access)
    pull(ref, tmp_path / "from-env", access, expect_sha256=sha)
    assert tree(tmp_path / "from-env") == expected


def test_a_replaced_object_is_refused_and_leaves_nothing(s3: S3Server, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "finance", seed=2)
    ref = S3Ref.parse(f"s3://{s3.bucket}/finance/run-1")
    sha = push(adapter, ref, s3.access())
    weights = tamper(Path(shutil.copytree(adapter, tmp_path / "tampered"))) / "adapter_model.safetensors"
    s3.client().put_object(Bucket=s3.bucket, Key=ref.key("adapter_model.safetensors"), Body=weights.read_bytes())

    dest = tmp_path / "cache" / "finance"
    with pytest.raises(ArtifactRefused, match=r"adapter_model\.safetensors: sha256 mismatch"):
        pull(ref, dest, s3.access(), expect_sha256=sha)
    assert not dest.exists() and leftovers(dest.parent) == []

    # A much larger object is refused while it streams: more bytes than result.json's size_bytes.
    big = os.urandom(2 * 300_000)
    s3.client().put_object(Bucket=s3.bucket, Key=ref.key("adapter_model.safetensors"), Body=big)
    with pytest.raises(ArtifactRefused, match=r"adapter_model\.safetensors is larger than"):
        pull(ref, dest, s3.access(), expect_sha256=sha)
    assert not dest.exists() and leftovers(dest.parent) == []

    s3.client().delete_object(Bucket=s3.bucket, Key=ref.key("adapter_model.safetensors"))
    with pytest.raises(ArtifactRefused, match=r"adapter_model\.safetensors: missing"):
        pull(ref, dest, s3.access(), expect_sha256=sha)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_bytes_corrupted_at_rest_are_refused(s3: S3Server, tmp_path: Path) -> None:
    """The object's file on the server's disk changes under it (bit rot, or someone with disk access)."""
    adapter = make_adapter(tmp_path / "legal", seed=3)
    ref = S3Ref.parse(f"s3://{s3.bucket}/legal/run-1")
    sha = push(adapter, ref, s3.access())
    tamper(s3.data_dir / s3.bucket / "legal" / "run-1")  # the posix backend: one file per object
    dest = tmp_path / "cache" / "legal"
    stored_or_ours = (
        r"adapter_model\.safetensors: (the bytes do not match the object's stored checksum|sha256 mismatch)"
    )
    with pytest.raises(ArtifactRefused, match=stored_or_ours):
        pull(ref, dest, s3.access(), expect_sha256=sha)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_the_pin_refuses_another_version_behind_the_same_key(s3: S3Server, tmp_path: Path) -> None:
    first = make_adapter(tmp_path / "v1", seed=4)
    second = make_adapter(tmp_path / "v2", seed=5)
    ref = S3Ref.parse(f"s3://{s3.bucket}/support/latest")
    pinned = push(first, ref, s3.access())
    replaced = push(second, ref, s3.access())  # a later push to the same prefix replaces result.json too
    assert replaced != pinned

    dest = tmp_path / "cache" / "support"
    with pytest.raises(ArtifactRefused, match=f"adapter version {replaced}, expected {pinned}"):
        pull(ref, dest, s3.access(), expect_sha256=pinned)
    assert not dest.exists() and leftovers(dest.parent) == []
    unpinned = pull(ref, dest, s3.access(), expect_sha256=None)
    assert unpinned.adapter and unpinned.adapter.sha256 == replaced
    assert tree(dest) == tree(second)


def test_admit_refuses_before_any_adapter_file_is_fetched(s3: S3Server, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "qwen", seed=6, base_model="Qwen/Qwen3-0.6B")
    ref = S3Ref.parse(f"s3://{s3.bucket}/qwen/run-1")
    sha = push(adapter, ref, s3.access())
    seen: list[TrainingResult] = []

    def admit(result: TrainingResult) -> str | None:
        seen.append(result)
        base = result.base_model.uri if result.base_model else ""
        return f"its base model {base} is not this replica's" if base != "HuggingFaceTB/SmolLM2-135M-Instruct" else None

    s3.client().delete_object(Bucket=s3.bucket, Key=ref.key("adapter_model.safetensors"))  # would be "missing"
    dest = tmp_path / "cache" / "qwen"
    with pytest.raises(ArtifactRefused, match=re.escape("its base model Qwen/Qwen3-0.6B is not this replica's")):
        pull(ref, dest, s3.access(), expect_sha256=sha, admit=admit)
    assert [r.adapter.sha256 for r in seen if r.adapter] == [sha]
    assert not dest.exists() and leftovers(dest.parent) == []


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"../escape.json": "0" * 64}, "outside the adapter"),
        ({"/etc/passwd": "0" * 64}, "outside the adapter"),
        ({"checkpoints/step-1/model.bin": "0" * 64}, "not an adapter file"),
        ({f"f{i}.bin": "0" * 64 for i in range(65)}, "65 files; an adapter has at most 64"),
    ],
)
def test_a_foreign_result_json_is_refused(s3: S3Server, tmp_path: Path, files: dict[str, str], problem: str) -> None:
    prefix = f"foreign/{tmp_path.name}"
    put_result(s3, prefix, files)
    (tmp_path / "cache").mkdir()
    with pytest.raises(ArtifactRefused, match=problem):
        pull(S3Ref.parse(f"s3://{s3.bucket}/{prefix}"), tmp_path / "cache" / "x", s3.access(), expect_sha256=None)
    assert [p.name for p in tmp_path.rglob("*")] == ["cache"]  # nothing written, inside or outside


def test_nothing_pushed_there_is_a_store_error(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no result\.json \(nothing pushed there"):
        pull(S3Ref.parse(f"s3://{s3.bucket}/never/pushed"), tmp_path / "x", s3.access(), expect_sha256=None)
    with pytest.raises(StoreError, match=r"NoSuchBucket \(HTTP 404\)"):
        pull(S3Ref.parse("s3://no-such-bucket/a"), tmp_path / "x", s3.access(), expect_sha256=None)


def test_a_wrong_secret_key_is_a_clear_store_error(s3: S3Server, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "hr", seed=7)
    ref = S3Ref.parse(f"s3://{s3.bucket}/hr/run-1")
    wrong = s3.access(secret_key="not-the-secret")
    clear = r"SignatureDoesNotMatch \(HTTP 403\).*check the S3 credentials"
    with pytest.raises(StoreError, match=clear) as refused:
        push(adapter, ref, wrong)
    assert not isinstance(refused.value, ArtifactRefused)  # the store said no: not a verdict on the adapter
    assert keys(s3, "hr/run-1") == []

    sha = push(adapter, ref, s3.access())
    creds = s3.credentials_file(tmp_path / "secret" / "credentials", secret_key="not-the-secret")
    from_file = S3Access.from_env({"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_ENDPOINT_URL": s3.endpoint})
    with pytest.raises(StoreError, match=clear):
        pull(ref, tmp_path / "x", from_file, expect_sha256=sha)
    assert not (tmp_path / "x").exists()


def test_push_refuses_a_directory_that_does_not_match_its_result_json(s3: S3Server, tmp_path: Path) -> None:
    adapter = tamper(make_adapter(tmp_path / "broken", seed=8))
    with pytest.raises(ArtifactRefused, match=r"adapter_model\.safetensors: sha256 mismatch"):
        push(adapter, S3Ref.parse(f"s3://{s3.bucket}/broken/run-1"), s3.access())
    (adapter / "extra.txt").write_text("not listed")
    with pytest.raises(ArtifactRefused, match=r"extra\.txt: not in result\.json"):
        push(adapter, S3Ref.parse(f"s3://{s3.bucket}/broken/run-1"), s3.access())
    assert keys(s3, "broken/run-1") == []


def test_from_env_names_a_credentials_file_it_cannot_use(tmp_path: Path) -> None:
    empty = tmp_path / "credentials"
    empty.write_text("[other]\naws_access_key_id = a\naws_secret_access_key = b\n")
    with pytest.raises(ValueError, match=r"no \[default\] with aws_access_key_id and aws_secret_access_key"):
        S3Access.from_env({"AWS_SHARED_CREDENTIALS_FILE": str(empty)})
    with pytest.raises(ValueError, match="cannot read the S3 credentials file"):
        S3Access.from_env({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "missing")})
    other = S3Access.from_env({"AWS_SHARED_CREDENTIALS_FILE": str(empty), "AWS_PROFILE": "other"})
    assert (other.access_key_id, other.secret_access_key, other.endpoint_url) == ("a", "b", None)
    env = S3Access.from_env({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"})
    assert (env.access_key_id, env.secret_access_key, env.region) == ("k", "s", "eu-west-1")


def test_references_round_trip() -> None:
    for uri in ["s3://adapters/medical/run-1", "s3://my.bucket-2/a/b/c_d.e(f)", "s3://abc/x"]:
        assert str(S3Ref.parse(uri)) == uri
    ref = S3Ref.parse("s3://adapters/medical/run-1/")
    assert (ref.bucket, ref.prefix, str(ref)) == ("adapters", "medical/run-1", "s3://adapters/medical/run-1")
    assert ref.key("tokenizer/tokenizer.json") == "medical/run-1/tokenizer/tokenizer.json"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("oci://registry/adapters/medical", "no s3:// scheme"),
        ("s3://Adapters/medical", "bucket 'Adapters' is not a DNS-style bucket name"),
        ("s3://ab/medical", "bucket 'ab' is not a DNS-style bucket name"),
        ("s3://my_bucket/medical", "bucket 'my_bucket'"),
        ("s3://a..b/medical", "bucket 'a..b'"),
        ("s3://192.168.1.10/medical", "not an IP address"),
        ("s3://adapters", "no key prefix after the bucket"),
        ("s3://adapters/", "no key prefix after the bucket"),
        ("s3://adapters/medical/../finance", r"has an empty, '\.' or '\.\.' segment"),
        ("s3://adapters/medical//run-1", "has an empty"),
        ("s3://adapters//medical", "has an empty"),
        ("s3://adapters/medical/run 1", "segment 'run 1' has characters outside"),
        ("s3://adapters/medical\\run-1", "has characters outside"),
    ],
)
def test_a_bad_reference_names_the_problem(uri: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        S3Ref.parse(uri)
