"""Score a finished adapter again: base vs adapter on a held-out set (local mode's `loraplane eval`).

Uses the run's own training spec (its template and data format) with the evaluation section replaced,
and the same report as training writes into result.json.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loraplane.api.result import RESULT_FILE, Evaluation, TrainingResult
from loraplane.api.trainer_spec import TrainerSpec
from loraplane.trainer.errors import InvalidSpec


def rescore(spec: TrainerSpec, adapter_dir: Path) -> Evaluation | None:
    """result.json-style `evaluation` of the adapter in `adapter_dir` under `spec.evaluation`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loraplane.trainer.evaluate import evaluation_report
    from loraplane.trainer.models import resolve_base_model
    from loraplane.trainer.train import load_examples, load_tokenizer

    result = TrainingResult.read(adapter_dir)
    if result is None or result.base_model is None:
        raise InvalidSpec(f"{adapter_dir} has no readable {RESULT_FILE}: not a finished adapter")
    if not spec.evaluation.held_out_uri and spec.dataset.validation_split == 0:
        raise InvalidSpec("no held-out data: give a held-out set", field="spec.evaluation.heldOutUri")
    token = os.environ.get(spec.hub_token_env) or None
    base = Path(result.base_model.path)
    if not base.is_dir():
        base = resolve_base_model(spec, token).path
    examples = load_examples(spec, token)
    tokenizer = load_tokenizer(base)
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    return evaluation_report(model, tokenizer, examples.held_out, examples.general_held, spec.evaluation)
