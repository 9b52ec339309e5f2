"""ModelServer validation the CRD schema cannot express. Pure: a spec dict in, a list of problems out.

Invariant: a spec without problems names only FineTuneJobs the server may read (its own namespace, or
one listed in `spec.allowedNamespaces`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loraplane.api.lora_rules import Problem
from loraplane.api.modelserver import ModelServerSpec
from loraplane.operator.admission import parse_spec


def modelserver_problems(spec: Mapping[str, Any]) -> list[Problem]:
    """Every reason this ModelServer spec cannot be served, each naming its field."""
    parsed, problems = parse_spec(ModelServerSpec, spec)
    if parsed is None:
        return problems
    allowed = set(parsed.allowed_namespaces or [])
    for i, adapter in enumerate(parsed.adapters):
        sources = [("source", adapter.source)] + ([("canary.source", adapter.canary.source)] if adapter.canary else [])
        for where, source in sources:
            if source.namespace and source.namespace not in allowed:
                problems.append(
                    Problem(
                        f"spec.adapters[{i}].{where}.namespace",
                        f"namespace {source.namespace!r} is not in spec.allowedNamespaces",
                    )
                )
    return problems
