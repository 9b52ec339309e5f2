"""Read FineTuneJob and ModelServer YAML for local mode, validated by the same models and rules as the cluster."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from loraplane.api.common import API_VERSION, DNS_LABEL_PATTERN
from loraplane.api.finetunejob import FineTuneJobSpec
from loraplane.api.lora_rules import Problem
from loraplane.api.modelserver import ModelServerSpec
from loraplane.operator.finetunejob.validation import finetunejob_problems
from loraplane.operator.modelserver.validation import modelserver_problems


class ManifestError(ValueError):
    """The file is not a valid FineTuneJob/ModelServer; the message names the file and every bad field."""


def _problems_text(path: Path, kind: str, name: str, problems: list[Problem]) -> str:
    lines = [f"{path}: {kind} {name!r} is invalid:"]
    lines += [f"  {p.field}: {p.message}" for p in problems]
    return "\n".join(lines)


def read_documents(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise ManifestError(f"{path}: expected one or more Kubernetes objects (YAML mappings)")
    return docs


def _one(path: Path, kind: str) -> tuple[str, dict[str, Any]]:
    docs = [d for d in read_documents(path) if d.get("kind") == kind]
    if len(docs) != 1:
        kinds = sorted({str(d.get("kind")) for d in read_documents(path)})
        raise ManifestError(f"{path}: expected exactly one {kind}, found {len(docs)} (kinds in the file: {kinds})")
    doc = docs[0]
    if doc.get("apiVersion") != API_VERSION:
        raise ManifestError(f"{path}: apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}")
    name = str((doc.get("metadata") or {}).get("name") or "")
    if not re.match(DNS_LABEL_PATTERN, name) or len(name) > 63:
        raise ManifestError(f"{path}: metadata.name: expected a DNS label (lowercase, digits, '-'), got {name!r}")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError(f"{path}: spec: expected a mapping")
    return name, spec


def load_finetunejob(path: Path) -> tuple[str, FineTuneJobSpec]:
    """The FineTuneJob in `path`, or ManifestError with the same field messages the operator would give."""
    name, spec = _one(path, "FineTuneJob")
    problems = finetunejob_problems(spec)
    if problems:
        raise ManifestError(_problems_text(path, "FineTuneJob", name, problems))
    return name, FineTuneJobSpec.model_validate(spec)


def load_modelserver(path: Path) -> tuple[str, ModelServerSpec]:
    name, spec = _one(path, "ModelServer")
    problems = modelserver_problems(spec)
    if problems:
        raise ManifestError(_problems_text(path, "ModelServer", name, problems))
    return name, ModelServerSpec.model_validate(spec)
