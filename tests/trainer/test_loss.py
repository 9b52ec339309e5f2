"""The answer-only loss equals the model's own loss on the same padding-free batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig

from loraplane.trainer.loss import AnswerLossTrainer, accepts_logits_to_keep, next_token_targets


def rows(tokenizer: Any) -> list[dict[str, list[int]]]:
    out = []
    for i in range(4):
        prompt = tokenizer(f"question number {i} about the code")["input_ids"]
        answer = tokenizer(f" answer E{i}")["input_ids"]
        out.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return out


def test_next_token_targets_keeps_positions_before_each_labelled_token() -> None:
    labels = torch.tensor([[-100, -100, 7, 8, -100, 9]])
    keep, targets = next_token_targets(labels)
    assert keep.tolist() == [1, 2, 4]
    assert targets.tolist() == [7, 8, 9]


@pytest.mark.parametrize("packing", [True, False])
def test_answer_loss_matches_the_models_loss(tiny_model: Path, tmp_path: Path, packing: bool) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    assert accepts_logits_to_keep(model)
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        padding_free=packing,
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        report_to="none",
        use_cpu=True,
    )
    trainer = AnswerLossTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows(tokenizer)))
    batch = trainer._prepare_inputs(trainer.data_collator(rows(tokenizer)))
    assert batch["input_ids"].shape[0] == (1 if packing else 4)
    with torch.no_grad():
        ours = float(trainer.compute_loss(model, dict(batch)))
        reference = float(model(**batch).loss)
    assert ours == pytest.approx(reference, rel=1e-5)
