"""Validation the CRD schema cannot express. Pure: a spec dict in, a list of problems out."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from loraplane.api.finetunejob import FineTuneJobSpec
from loraplane.api.lora_rules import Problem, known_model, servability_problems
from loraplane.api.modelserver import ModelServerSpec


def _pydantic_problems(exc: ValidationError, prefix: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        path = prefix
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        problems.append(Problem(path, err["msg"]))
    return problems


def parse_finetunejob_spec(spec: dict[str, Any]) -> tuple[FineTuneJobSpec | None, list[Problem]]:
    """Parse with the same model the CRD was generated from (the API server normally already did)."""
    try:
        return FineTuneJobSpec.model_validate(spec), []
    except ValidationError as exc:
        return None, _pydantic_problems(exc, "spec")


def finetunejob_problems(spec: dict[str, Any]) -> list[Problem]:
    """Every reason this FineTuneJob spec cannot run, each naming its field."""
    parsed, problems = parse_finetunejob_spec(spec)
    if parsed is None:
        return problems
    model = known_model(parsed.base_model.uri)
    problems += servability_problems(
        bias=parsed.lora.bias,
        use_dora=parsed.lora.use_dora,
        modules_to_save=parsed.lora.modules_to_save,
        target_modules=parsed.lora.target_modules,
        family=model.family if model else None,
    )
    if model and model.needs_remote_code and not parsed.base_model.trust_remote_code:
        problems.append(
            Problem(
                "spec.baseModel.trustRemoteCode",
                f"{parsed.base_model.uri} needs the model's own Python code; set trustRemoteCode: true to allow it",
            )
        )
    if parsed.base_model.token_secret_ref and not parsed.base_model.uri.startswith(("hf://", "modelscope://")):
        problems.append(
            Problem("spec.baseModel.tokenSecretRef", "a hub token is only used with hf:// or modelscope:// models")
        )
    if parsed.resources.gpus == 0 and parsed.training.precision in ("bf16", "fp16"):
        problems.append(
            Problem(
                "spec.training.precision",
                f"{parsed.training.precision} needs a GPU (spec.resources.gpus is 0); use auto or fp32",
            )
        )
    if parsed.evaluation.gate and parsed.dataset.validation_split == 0 and not parsed.evaluation.held_out_uri:
        problems.append(
            Problem(
                "spec.evaluation.gate",
                "a gate needs held-out data: set spec.dataset.validationSplit > 0 or spec.evaluation.heldOutUri",
            )
        )
    if parsed.resources.nodes > 1 and parsed.resources.gpus == 0:
        problems.append(Problem("spec.resources.nodes", "multi-node training needs spec.resources.gpus >= 1"))
    return problems


def modelserver_problems(spec: dict[str, Any]) -> list[Problem]:
    """Every reason this ModelServer spec cannot be served, each naming its field."""
    try:
        parsed = ModelServerSpec.model_validate(spec)
    except ValidationError as exc:
        return _pydantic_problems(exc, "spec")
    problems: list[Problem] = []
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
