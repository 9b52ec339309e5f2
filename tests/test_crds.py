"""The committed CRDs are exactly what the generator makes from the models, and are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from loraplane.api.crdgen import render_all, render_crds

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
