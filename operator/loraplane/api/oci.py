"""Adapters as OCI artifacts: the reference syntax and the layout, shared by whoever pushes or pulls.

The layout follows the CNCF ModelPack specification (model-spec v1, `application/vnd.cncf.model.*`):

- the manifest's `artifactType` is :data:`ARTIFACT_TYPE`;
- its config blob (:data:`CONFIG_MEDIA_TYPE`) is a small ModelPack config naming the base model and the
  adapter digest, with `modelfs.diffIds` = the layer digests;
- every file of the adapter directory is one *raw* (untarred, uncompressed) layer whose path is in the
  layer annotation :data:`FILEPATH_ANNOTATION`. Raw layers make the layer digest the file's sha256, the same
  digest result.json records, so a puller checks one against the other before anything is loaded;
- result.json (the lineage: base model, dataset, spec, evaluation) travels as a layer like any other file.

Pure (no oras, no network): the operator imports it for admission and status; the client lives in
:mod:`loraplane.serving.oci_store`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pydantic import Field

from loraplane.api.common import DNS_LABEL_PATTERN
from loraplane.api.result import RESULT_FILE

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.raw"  # adapter_model.safetensors
WEIGHT_CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.weight.config.v1.raw"  # adapter_config.json, tokenizer
DOC_MEDIA_TYPE = "application/vnd.cncf.model.doc.v1.raw"  # result.json, README.md
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
FILEPATH_ANNOTATION = "org.cncf.model.filepath"
ADAPTER_SHA256_ANNOTATION = "io.loraplane.adapter.sha256"  # result.json's adapter.sha256, on the manifest
BASE_MODEL_ANNOTATION = "io.loraplane.base-model"  # the base model URI, on the manifest
DOCKER_CONFIG_ENV = "DOCKER_CONFIG"  # a directory with config.json (the registry login), as for docker and oras
REGISTRY_AUTH_DIR = "/etc/loraplane/registry"  # where a pod mounts its dockerconfigjson Secret
MAX_LAYERS = 64  # an adapter is a handful of files; a manifest with more is not one of ours

_REGISTRY = r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?"
_REPO_PART = r"[a-z0-9]+([._-][a-z0-9]+)*"  # the distribution spec's path component (no . or .. segments)
_TAG = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
OCI_URI_PATTERN = rf"^oci://{_REGISTRY}/{_REPO_PART}(/{_REPO_PART})*(:{_TAG})?(@{_DIGEST})?$"
OCI_URI_HELP = "oci://REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST] (lowercase repository path)"
OCI_PUSH_URI_PATTERN = rf"^oci://{_REGISTRY}/{_REPO_PART}(/{_REPO_PART})*(:{_TAG})?$"  # where to push: no digest
OCI_PUSH_URI_HELP = "oci://REGISTRY[:PORT]/REPOSITORY[:TAG] (lowercase repository path, no digest)"


def login_secret_field(mounted_into: str) -> Any:
    """The schema of a `credentialsSecret` field: the Secret's name, and who alone mounts it."""
    return Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
        description="A kubernetes.io/dockerconfigjson Secret with the registry login; mounted only into the "
        f"{mounted_into} (the operator never reads it).",
    )


OCI_PINNED_URI_PATTERN = rf"^oci://{_REGISTRY}/{_REPO_PART}(/{_REPO_PART})*(:{_TAG})?@{_DIGEST}$"  # one version
OCI_PINNED_URI_HELP = "oci://REGISTRY[:PORT]/REPOSITORY[:TAG]@sha256:DIGEST (pinned: a tag can move)"
_PARSE = re.compile(
    rf"^oci://(?P<registry>{_REGISTRY})/(?P<repository>{_REPO_PART}(/{_REPO_PART})*)"
    rf"(:(?P<tag>{_TAG}))?(@(?P<digest>{_DIGEST}))?$"
)


class BadReference(ValueError):
    """Not an oci:// reference of the form :data:`OCI_URI_HELP`."""


@dataclass(frozen=True)
class OciRef:
    """One artifact reference: where it lives and, when known, its manifest digest (which wins over the tag)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, uri: str) -> OciRef:
        match = _PARSE.fullmatch(uri)
        if match is None:
            raise BadReference(f"{uri!r} is not an OCI reference: expected {OCI_URI_HELP}")
        return cls(match["registry"], match["repository"], match["tag"], match["digest"])

    @property
    def reference(self) -> str:
        """What the registry's manifest endpoint is asked for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def target(self) -> str:
        """`registry/repository:tag` or `registry/repository@digest` (oras' container syntax, no scheme)."""
        name = f"{self.registry}/{self.repository}"
        if self.digest:
            return f"{name}@{self.digest}"
        return f"{name}:{self.tag or 'latest'}"

    def pinned(self, digest: str) -> OciRef:
        return OciRef(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        uri = f"oci://{self.registry}/{self.repository}"
        if self.tag:
            uri += f":{self.tag}"
        if self.digest:
            uri += f"@{self.digest}"
        return uri


def layer_media_type(path: str) -> str:
    """The ModelPack media type of one adapter file."""
    name = PurePosixPath(path).name
    if name.endswith((".safetensors", ".bin", ".pt")):
        return WEIGHT_MEDIA_TYPE
    if name == RESULT_FILE or name.endswith(".md"):
        return DOC_MEDIA_TYPE
    return WEIGHT_CONFIG_MEDIA_TYPE


def safe_layer_path(path: str | None) -> str:
    """The layer's file path if it stays inside the adapter directory; else :class:`ValueError`."""
    if not path:
        raise ValueError(f"layer without the {FILEPATH_ANNOTATION} annotation")
    pure = PurePosixPath(path)
    if pure.is_absolute() or "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"layer path {path!r} leaves the adapter directory")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise ValueError(f"layer path {path!r} has a control character")
    return pure.as_posix()
