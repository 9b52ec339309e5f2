"""The committed CRDs are exactly what the generator makes from the models, and are structural."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from loraplane.api.common import MODEL_URI_PATTERN
from loraplane.api.crdgen import render_all, render_crds
from loraplane.api.finetunejob import DATASET_URI_PATTERN, OUTPUT_URI_PATTERN
from loraplane.api.modelserver import ADAPTER_URI_PATTERN
from tests.support.uris import (
    OCI_PINNED,
    OCI_PINNED_TRAVERSALS,
    OCI_SAFE,
    OCI_TRAVERSALS,
    SAFE_URIS,
    TRAVERSALS,
)

CRDS = Path(__file__).resolve().parent.parent / "manifests" / "crds"


def test_committed_crds_match_generator() -> None:
    rendered = render_all()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in CRDS.glob("*.yaml")}
    assert set(on_disk) == set(rendered), "run `make manifests`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is stale: run `make manifests`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties",):
            for name, sub in node.get(key, {}).items():
                out += _walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                out += _walk(node[key], f"{path}[]")
    return out


def test_schemas_are_structural_and_documented() -> None:
    for text in render_crds().values():
        crd = yaml.safe_load(text)
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema["properties"]["spec"], "spec"):
            assert "type" in node, f"{path} has no type"
            for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "const"):
                assert banned not in node, f"{path} has {banned}"
            if not path.endswith("[]"):  # list items and map values are described by their field
                assert node.get("description"), f"{path} has no description (kubectl explain shows it)"
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["categories"] == ["loraplane"]


def test_identity_fields_are_immutable() -> None:
    crd = yaml.safe_load(render_all()["loraplane.io_finetunejobs.yaml"])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field in ("baseModel", "dataset", "lora", "training"):
        rules = [r["rule"] for r in spec[field]["x-kubernetes-validations"]]
        assert "self == oldSelf" in rules, field
    assert "x-kubernetes-validations" not in spec["suspend"]


def _uri_fields() -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, path, schema) of every spec field whose name says it holds a URI."""
    out = []
    for text in render_crds().values():
        crd = yaml.safe_load(text)
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        for path, node in _walk(spec, "spec"):
            if path.rsplit(".", 1)[-1].lower().endswith("uri"):
                out.append((crd["spec"]["names"]["kind"], path, node))
    return out


def _api_server_matches(pattern: str, value: str) -> bool:
    """How the API server (Go regexp, unanchored search, `$` only at the very end) applies `pattern`."""
    return re.search(pattern.replace("$", r"\Z"), value) is not None


# Every spec field holding a URI, and the model pattern that checks it in local mode.
URI_PATTERNS = {
    ("FineTuneJob", "spec.baseModel.uri"): MODEL_URI_PATTERN,
    ("FineTuneJob", "spec.dataset.uri"): DATASET_URI_PATTERN,
    ("FineTuneJob", "spec.evaluation.heldOutUri"): DATASET_URI_PATTERN,
    ("ModelServer", "spec.baseModel.uri"): MODEL_URI_PATTERN,
    ("ModelServer", "spec.adapters[].source.uri"): ADAPTER_URI_PATTERN,
    ("ModelServer", "spec.adapters[].canary.source.uri"): ADAPTER_URI_PATTERN,
    ("FineTuneJob", "spec.output.uri"): OUTPUT_URI_PATTERN,
}
OCI_FIELDS = {("FineTuneJob", "spec.output.uri")}
PINNED_FIELDS = {("ModelServer", "spec.adapters[].source.uri"), ("ModelServer", "spec.adapters[].canary.source.uri")}


def test_every_uri_field_has_the_models_pattern() -> None:
    """Local mode validates with the models, the API server with the CRDs: same pattern, same verdict."""
    fields = _uri_fields()
    assert {(kind, path) for kind, path, _ in fields} == set(URI_PATTERNS)
    for kind, path, node in fields:
        assert node["type"] == "string" and "maxLength" in node, f"{kind} {path}"
        assert node.get("pattern") == URI_PATTERNS[kind, path], f"{kind} {path}"


@pytest.mark.parametrize("uri", TRAVERSALS)
def test_crd_schema_refuses_path_traversal_in_every_uri_field(uri: str) -> None:
    for kind, path, node in _uri_fields():
        assert not _api_server_matches(node["pattern"], uri), f"{kind} {path} admits {uri!r}"


@pytest.mark.parametrize("uri", SAFE_URIS)
def test_crd_schema_admits_safe_uris(uri: str) -> None:
    for kind, path, node in _uri_fields():
        if (kind, path) not in OCI_FIELDS:
            assert _api_server_matches(node["pattern"], uri), f"{kind} {path} refuses {uri!r}"


@pytest.mark.parametrize("uri", OCI_TRAVERSALS)
def test_crd_schema_refuses_bad_oci_references(uri: str) -> None:
    for kind, path, node in _uri_fields():
        assert not _api_server_matches(node["pattern"], uri), f"{kind} {path} admits {uri!r}"


@pytest.mark.parametrize("uri", OCI_SAFE)
def test_crd_schema_admits_oci_references_where_they_belong(uri: str) -> None:
    for kind, path, node in _uri_fields():
        assert _api_server_matches(node["pattern"], uri) == ((kind, path) in OCI_FIELDS), f"{kind} {path} {uri!r}"


@pytest.mark.parametrize("uri", OCI_PINNED)
def test_crd_schema_admits_pinned_oci_versions_as_adapter_sources_only(uri: str) -> None:
    for kind, path, node in _uri_fields():
        assert _api_server_matches(node["pattern"], uri) == ((kind, path) in PINNED_FIELDS), f"{kind} {path} {uri!r}"


@pytest.mark.parametrize("uri", OCI_PINNED_TRAVERSALS)
def test_crd_schema_refuses_bad_pinned_oci_versions(uri: str) -> None:
    for kind, path, node in _uri_fields():
        assert not _api_server_matches(node["pattern"], uri), f"{kind} {path} admits {uri!r}"
