"""Side-by-side generation: batched answers in input order, base vs adapter, model left unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from loraplane.trainer.data import Example
from loraplane.trainer.evaluate import generate, side_by_side

PROMPTS = [
    [{"role": "user", "content": "short"}],
    [{"role": "user", "content": "a much longer question about the code of item number seven"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "medium length question"}],
]


def peft_model(path: Path) -> Any:
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(AutoModelForCausalLM.from_pretrained(path), config).eval()


def test_batched_generation_keeps_input_order(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2)
    one_by_one = [generate(model, tokenizer, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert batched == one_by_one


def test_side_by_side_scores_base_and_adapter_and_restores_the_weights(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    model = peft_model(tiny_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base_answers = generate(base, tokenizer, PROMPTS, max_new_tokens=6)
    adapter_answers = generate(model, tokenizer, PROMPTS, max_new_tokens=6)
    assert base_answers != adapter_answers  # the random adapter changes what the model says
    examples = [Example(prompt=p, completion=a, answer=a) for p, a in zip(PROMPTS, adapter_answers, strict=True)]

    result = side_by_side(model, tokenizer, examples, "ExactMatch", max_new_tokens=6)

    assert result.base_predictions == base_answers
    assert result.adapter_predictions == adapter_answers
    assert result.adapter_score == 1.0 and result.base_score < 1.0
    after = model.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
