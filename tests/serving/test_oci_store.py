"""Adapters as OCI artifacts against a real registry (Debian's docker-registry): push, pull by digest and by tag,
and every way a pulled artifact is refused before anything could load it."""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from loraplane.api.artifact import file_digests
from loraplane.api.oci import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    DOC_MEDIA_TYPE,
    FILEPATH_ANNOTATION,
    MANIFEST_MEDIA_TYPE,
    WEIGHT_CONFIG_MEDIA_TYPE,
    WEIGHT_MEDIA_TYPE,
    OciRef,
)
from loraplane.api.result import RESULT_FILE, TrainingResult
from loraplane.serving import oci_store
from loraplane.serving.oci_store import ArtifactRefused, RegistryAccess, StoreError, pull, push
from tests.support.registry import Registry, docker_config, private_registry
from tests.support.serving import MakeAdapter, tamper

PLAIN = RegistryAccess(plain_http=True)
LOGIN = ("trainer", "s3cret-pass")


@pytest.fixture(scope="module")
def adapter(make_adapter: MakeAdapter) -> Path:
    return make_adapter("oci-medical", seed=7)


def manifest(registry: Registry, ref: OciRef) -> tuple[bytes, dict]:
    request = urllib.request.Request(
        f"http://{registry.addr}/v2/{ref.repository}/manifests/{ref.reference}", headers={"Accept": MANIFEST_MEDIA_TYPE}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return body, json.loads(body)


def test_push_then_pull_by_digest_gives_the_same_verified_adapter(
    oci_registry: Registry, adapter: Path, tmp_path: Path
) -> None:
    ref = OciRef.parse(f"oci://{oci_registry.addr}/adapters/medical:run-1")
    pushed = push(adapter, ref, PLAIN)
    assert pushed.ref.digest and pushed.ref.tag == "run-1"
    assert str(pushed.ref) == f"oci://{oci_registry.addr}/adapters/medical:run-1@{pushed.ref.digest}"

    body, doc = manifest(oci_registry, pushed.ref)
    assert "sha256:" + hashlib.sha256(body).hexdigest() == pushed.ref.digest
    assert doc["artifactType"] == ARTIFACT_TYPE and doc["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    layers = {x["annotations"][FILEPATH_ANNOTATION]: x for x in doc["layers"]}
    digests = file_digests(adapter)
    assert set(layers) == {*digests, RESULT_FILE}  # every file and result.json; no checkpoints
    for name, sha in digests.items():  # raw layers: the layer digest is result.json's file digest
        assert layers[name]["digest"] == f"sha256:{sha}"
    assert layers["adapter_model.safetensors"]["mediaType"] == WEIGHT_MEDIA_TYPE
    assert layers["adapter_config.json"]["mediaType"] == WEIGHT_CONFIG_MEDIA_TYPE
    assert layers[RESULT_FILE]["mediaType"] == DOC_MEDIA_TYPE
    recorded = TrainingResult.read(adapter)
    assert recorded and recorded.adapter
    assert doc["annotations"]["io.loraplane.adapter.sha256"] == recorded.adapter.sha256

    dest = tmp_path / "pulled"
    result = pull(pushed.ref, dest, PLAIN, expect_sha256=recorded.adapter.sha256)
    assert result.adapter and result.adapter.sha256 == recorded.adapter.sha256
    assert file_digests(dest) == digests
    assert (dest / RESULT_FILE).read_bytes() == (adapter / RESULT_FILE).read_bytes()  # lineage travels with it

    by_tag = pull(OciRef.parse(f"oci://{oci_registry.addr}/adapters/medical:run-1"), tmp_path / "by-tag", PLAIN)
    assert by_tag.adapter and by_tag.adapter.sha256 == recorded.adapter.sha256


def test_a_tampered_artifact_is_refused_and_leaves_nothing(
    oci_registry: Registry, adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = tamper(Path(shutil.copytree(adapter, tmp_path / "tampered")))
    with pytest.raises(ArtifactRefused, match=r"adapter_model\.safetensors: sha256 mismatch"):
        push(tampered, OciRef.parse(f"oci://{oci_registry.addr}/adapters/tampered:x"), PLAIN)

    # Someone else's client pushes it anyway (our own check switched off to get it into the registry).
    monkeypatch.setattr(oci_store, "verify", lambda _dir: [])
    pushed = push(tampered, OciRef.parse(f"oci://{oci_registry.addr}/adapters/tampered:x"), PLAIN)
    monkeypatch.undo()

    dest = tmp_path / "pulled"
    with pytest.raises(ArtifactRefused, match=r"adapter_model\.safetensors: sha256 mismatch"):
        pull(pushed.ref, dest, PLAIN)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pulled")] == []  # no staging left behind


def test_wrong_version_and_unknown_digest_are_refused(oci_registry: Registry, adapter: Path, tmp_path: Path) -> None:
    pushed = push(adapter, OciRef.parse(f"oci://{oci_registry.addr}/adapters/medical:run-2"), PLAIN)
    with pytest.raises(ArtifactRefused, match="expected " + "0" * 64):
        pull(pushed.ref, tmp_path / "a", PLAIN, expect_sha256="0" * 64)
    assert not (tmp_path / "a").exists()
    missing = pushed.ref.pinned("sha256:" + "1" * 64)
    with pytest.raises(StoreError, match="404"):
        pull(missing, tmp_path / "b", PLAIN)


def test_a_foreign_artifact_is_refused(oci_registry: Registry, adapter: Path, tmp_path: Path) -> None:
    """An artifact of another type (here: a plain OCI image manifest) is not pulled as an adapter."""
    pushed = push(adapter, OciRef.parse(f"oci://{oci_registry.addr}/adapters/medical:run-3"), PLAIN)
    _, doc = manifest(oci_registry, pushed.ref)
    doc.pop("artifactType")
    body = json.dumps(doc).encode()
    request = urllib.request.Request(
        f"http://{oci_registry.addr}/v2/adapters/medical/manifests/image",
        data=body,
        method="PUT",
        headers={"Content-Type": MANIFEST_MEDIA_TYPE},
    )
    urllib.request.urlopen(request, timeout=10).close()
    with pytest.raises(ArtifactRefused, match="artifactType None"):
        pull(OciRef.parse(f"oci://{oci_registry.addr}/adapters/medical:image"), tmp_path / "x", PLAIN)


def test_a_registry_with_a_login(tmp_path: Path, adapter: Path) -> None:
    with private_registry(tmp_path / "state", login=LOGIN) as registry:
        ref = OciRef.parse(f"oci://{registry.addr}/private/medical:v1")
        with pytest.raises(StoreError, match=r"asks for a login \(HTTP 401\) and no registry credentials"):
            push(adapter, ref, PLAIN)
        bad = docker_config(tmp_path / "bad" / "config.json", registry.addr, LOGIN[0], "wrong")
        with pytest.raises(StoreError, match=r"(?i)401|unauthori"):
            push(adapter, ref, RegistryAccess(plain_http=True, docker_config=bad))
        access = RegistryAccess(plain_http=True, docker_config=registry.docker_config)
        pushed = push(adapter, ref, access)
        result = pull(pushed.ref, tmp_path / "pulled", access)
        assert result.adapter and (tmp_path / "pulled" / "adapter_model.safetensors").is_file()
