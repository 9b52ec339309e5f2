"""Loss on the answer tokens, computed only where there is an answer token.

In a padding-free batch (one flattened row per device) most positions are prompt: system prompt,
instruction, chat markup. Their labels are -100, so their logits are never needed. Projecting only
the labelled positions through the LM head (vocabulary 49k–152k wide) and skipping TRL's per-token
entropy/accuracy metrics makes a CPU step much faster than TRL's tiled fused LM head, at an identical loss
(TRL's head is built for GPU memory, not CPU speed; the measurement is in docs/benchmarks.md). Padded
batches (packing off) and models whose forward has no `logits_to_keep` keep TRL's own loss.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from trl import SFTTrainer  # type: ignore[attr-defined]

IGNORE = -100


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the (unwrapped, unpatched) causal LM's forward takes `logits_to_keep`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(type(base).forward).parameters


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a (1, T) label row: positions whose next token is labelled, and those next tokens."""
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)[0]
    keep = (shifted != IGNORE).nonzero().squeeze(-1)
    return keep, shifted[keep]


class AnswerLossTrainer(SFTTrainer):
    """SFTTrainer whose loss projects only the answer positions through the LM head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._selective = accepts_logits_to_keep(self.model)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        labels = inputs.get("labels")
        if not self._selective or return_outputs or labels is None or labels.shape[0] != 1:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[no-untyped-call]
        keep, targets = next_token_targets(labels)
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**model_inputs, use_cache=False, logits_to_keep=keep)
        loss_sum = torch.nn.functional.cross_entropy(outputs.logits[0].float(), targets, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
        loss = loss_sum / torch.as_tensor(count, device=loss_sum.device).clamp(min=1)
        # Like Trainer.compute_loss: num_items_in_batch counts every rank's tokens and DDP averages gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return loss
