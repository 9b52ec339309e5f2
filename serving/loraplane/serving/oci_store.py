"""Push an adapter directory to an OCI registry and pull it back, verified, with oras (the ORAS Python SDK).

The layout is :mod:`loraplane.api.oci`'s (CNCF ModelPack, one raw layer per file). `push` refuses a
directory that does not match its result.json; `pull` fetches by digest when the reference has one,
checks the manifest against that digest, every blob against its layer digest, every layer digest against
result.json and every path against the adapter directory, in a temporary directory that becomes the
destination only when all of that held. A half-pulled or tampered artifact never appears at `dest`.

Credentials: a Docker `config.json` (a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`,
mounted only into the pod that pushes or pulls). Nothing else here reads secrets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.container
import oras.oci
import oras.provider
import requests

from loraplane.api.artifact import EXCLUDED_DIRS, sha256_file, verify
from loraplane.api.oci import (
    ADAPTER_SHA256_ANNOTATION,
    ARTIFACT_TYPE,
    BASE_MODEL_ANNOTATION,
    CONFIG_MEDIA_TYPE,
    DOCKER_CONFIG_ENV,
    FILEPATH_ANNOTATION,
    MANIFEST_MEDIA_TYPE,
    MAX_LAYERS,
    OciRef,
    layer_media_type,
    safe_layer_path,
)
from loraplane.api.result import RESULT_FILE, TrainingResult

logger = logging.getLogger(__name__)


class StoreError(Exception):
    """The registry refused or failed a request, or the artifact is not a servable adapter."""


class ArtifactRefused(StoreError):
    """The artifact does not match its digests or its result.json (tampered, truncated or foreign)."""


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach a registry: plain HTTP (a local registry) and the Docker config with its credentials."""

    plain_http: bool = False
    docker_config: Path | None = None

    @classmethod
    def from_env(cls, *, plain_http: bool = False) -> RegistryAccess:
        """Credentials from $DOCKER_CONFIG/config.json when that file exists (where the pod mounts them)."""
        folder = os.environ.get(DOCKER_CONFIG_ENV)
        config = Path(folder) / "config.json" if folder else None
        return cls(plain_http=plain_http, docker_config=config if config and config.is_file() else None)


@dataclass(frozen=True)
class Pushed:
    ref: OciRef  # pinned: carries the manifest digest
    size_bytes: int


def _auth_backend(ref: OciRef, access: RegistryAccess) -> str:
    """oras' auth backend for the registry's challenge: `basic` when it asks for HTTP Basic (the CNCF distribution
    registry with htpasswd), else `token` (the bearer-token flow of ghcr.io, Harbor, Docker Hub, ...)."""
    scheme = "http" if access.plain_http else "https"
    response = requests.get(f"{scheme}://{ref.registry}/v2/", timeout=30)
    challenge = response.headers.get("Www-Authenticate", "")
    if response.status_code == 401 and challenge.lower().startswith("basic"):
        if access.docker_config is None:
            raise StoreError(f"{ref.registry} asks for a login (HTTP 401) and no registry credentials were given")
        return "basic"
    return "token"


def _registry(ref: OciRef, access: RegistryAccess) -> tuple[oras.provider.Registry, oras.container.Container]:
    backend = _auth_backend(ref, access)
    client = oras.provider.Registry(hostname=ref.registry, insecure=access.plain_http, auth_backend=backend)
    container = client.get_container(ref.target())
    configs = [str(access.docker_config)] if access.docker_config else []
    client.auth.load_configs(container, configs=configs)
    return client, container


def _check(response: Any, what: str) -> Any:
    if response.status_code not in (200, 201, 202):
        detail = response.text[:300] if hasattr(response, "text") else ""
        raise StoreError(f"{what}: HTTP {response.status_code} {detail}".strip())
    return response


def model_config(result: TrainingResult, layer_digests: list[str]) -> dict[str, Any]:
    """The ModelPack config blob: what the adapter is (family, base model) and which layers make it up."""
    assert result.adapter is not None
    base = result.base_model
    return {
        "descriptor": {"name": result.name or "adapter", "family": (base.family if base else None) or ""},
        "config": {"format": "safetensors", "paramSize": str(result.trainable_params or 0)},
        "modelfs": {"type": "layers", "diffIds": layer_digests},
        "loraplane": {
            "adapterSha256": result.adapter.sha256,
            "baseModel": base.uri if base else "",
            "baseModelRevision": (base.revision if base else None) or "",
            "rank": result.adapter.r,
            "targetModules": result.adapter.target_modules,
        },
    }


def verified_result(adapter_dir: Path) -> TrainingResult:
    """The result.json of `adapter_dir`; :class:`ArtifactRefused` unless every file matches it (what a push, to
    either store, and a load require)."""
    problems = verify(adapter_dir)
    result = TrainingResult.read(adapter_dir)
    if problems or result is None or result.adapter is None:
        raise ArtifactRefused(f"{adapter_dir} does not match its {RESULT_FILE}: {'; '.join(problems[:5])}")
    return result


def push(adapter_dir: Path, ref: OciRef, access: RegistryAccess) -> Pushed:
    """Upload every file of `adapter_dir` (result.json included, checkpoints not) as one artifact at `ref`."""
    try:
        return _push(adapter_dir, ref, access)
    except (requests.RequestException, ValueError) as exc:  # oras raises ValueError for a refused request
        raise StoreError(f"push to {ref}: {exc}") from exc


def _push(adapter_dir: Path, ref: OciRef, access: RegistryAccess) -> Pushed:
    result = verified_result(adapter_dir)
    assert result.adapter is not None  # verified_result checked it
    client, container = _registry(ref, access)
    layers = []
    for name in sorted([*result.adapter.files, RESULT_FILE]):  # verify(): exactly the adapter's files
        layer = oras.oci.NewLayer(str(adapter_dir / name), media_type=layer_media_type(name))
        layer["annotations"] = {FILEPATH_ANNOTATION: name}
        _check(client.upload_blob(str(adapter_dir / name), container, layer), f"upload {name} to {ref}")
        layers.append(layer)
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_bytes(json.dumps(model_config(result, [x["digest"] for x in layers])).encode())
        config = oras.oci.NewLayer(str(config_path), media_type=CONFIG_MEDIA_TYPE)
        config.pop("annotations", None)
        _check(client.upload_blob(str(config_path), container, config), f"upload the config to {ref}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": config,
        "layers": layers,
        "annotations": {
            ADAPTER_SHA256_ANNOTATION: result.adapter.sha256,
            BASE_MODEL_ANNOTATION: result.base_model.uri if result.base_model else "",
            "org.opencontainers.image.title": result.name or "adapter",
        },
    }
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    url = f"{client.prefix}://{container.manifest_url(ref.tag or 'latest')}"
    _check(
        client.do_request(url, "PUT", data=body, headers={"Content-Type": MANIFEST_MEDIA_TYPE}),
        f"upload the manifest to {ref}",
    )
    size = sum(int(x["size"]) for x in layers)
    logger.info("pushed %s (%d files, %d bytes) as %s", adapter_dir, len(layers), size, digest)
    return Pushed(ref.pinned(digest), size)


def _manifest(client: oras.provider.Registry, container: oras.container.Container, ref: OciRef) -> dict[str, Any]:
    url = f"{client.prefix}://{container.manifest_url(ref.reference)}"
    response = _check(client.do_request(url, "GET", headers={"Accept": MANIFEST_MEDIA_TYPE}), f"manifest of {ref}")
    body = response.content
    if ref.digest and "sha256:" + hashlib.sha256(body).hexdigest() != ref.digest:
        raise ArtifactRefused(f"{ref}: the registry's manifest does not have the digest asked for")
    manifest: dict[str, Any] = json.loads(body)
    if manifest.get("artifactType") != ARTIFACT_TYPE:
        raise ArtifactRefused(f"{ref}: artifactType {manifest.get('artifactType')!r}, expected {ARTIFACT_TYPE}")
    if not 0 < len(manifest.get("layers") or []) <= MAX_LAYERS:
        raise ArtifactRefused(f"{ref}: {len(manifest.get('layers') or [])} layers (1..{MAX_LAYERS} expected)")
    return manifest


def pull(
    ref: OciRef,
    dest: Path,
    access: RegistryAccess,
    *,
    expect_sha256: str | None = None,
    admit: Callable[[dict[str, Any]], str | None] | None = None,
) -> TrainingResult:
    """Fetch the artifact into `dest` (created; must not exist) and return its result.json.

    Raises :class:`ArtifactRefused` (and leaves nothing at `dest`) when any digest, path or file does not
    match, the adapter is not version `expect_sha256`, or `admit(manifest)` names a reason not to pull it
    (checked before any blob is downloaded).
    """
    try:
        return _pull(ref, dest, access, expect_sha256, admit)
    except (requests.RequestException, ValueError) as exc:
        raise StoreError(f"pull {ref}: {exc}") from exc


def _pull(
    ref: OciRef,
    dest: Path,
    access: RegistryAccess,
    expect_sha256: str | None,
    admit: Callable[[dict[str, Any]], str | None] | None,
) -> TrainingResult:
    client, container = _registry(ref, access)
    manifest = _manifest(client, container, ref)
    refusal = admit(manifest) if admit is not None else None
    if refusal:
        raise ArtifactRefused(f"{ref}: {refusal}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for layer in manifest["layers"]:
            try:
                name = safe_layer_path((layer.get("annotations") or {}).get(FILEPATH_ANNOTATION))
            except ValueError as exc:
                raise ArtifactRefused(f"{ref}: {exc}") from None
            if name.split("/")[0] in EXCLUDED_DIRS:
                raise ArtifactRefused(f"{ref}: layer {name} is not part of an adapter")
            target = staging / name
            client.download_blob(container, layer["digest"], str(target))
            if "sha256:" + sha256_file(target) != layer["digest"]:
                raise ArtifactRefused(f"{ref}: {name} does not have its layer digest {layer['digest']}")
        problems = verify(staging)
        if problems:
            raise ArtifactRefused(f"{ref}: the files do not match {RESULT_FILE}: {'; '.join(problems[:5])}")
        result = TrainingResult.read(staging)
        assert result is not None and result.adapter is not None  # verify() checked both
        if expect_sha256 and result.adapter.sha256 != expect_sha256:
            raise ArtifactRefused(f"{ref}: adapter version {result.adapter.sha256}, expected {expect_sha256}")
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result
