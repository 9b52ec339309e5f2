"""FineTuneJob validation the CRD schema cannot express. Pure: a spec dict in, a list of problems out.

Invariant: a spec without problems can run, and its adapter can be served by vLLM (lesson 10: refuse
what vLLM cannot serve before spending GPU hours).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loraplane.api.finetunejob import FineTuneJobSpec
from loraplane.api.lora_rules import Problem, known_model, servability_problems
from loraplane.operator.admission import parse_spec


def finetunejob_problems(spec: Mapping[str, Any]) -> list[Problem]:
    """Every reason this FineTuneJob spec cannot run, each naming its field."""
    parsed, problems = parse_spec(FineTuneJobSpec, spec)
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
