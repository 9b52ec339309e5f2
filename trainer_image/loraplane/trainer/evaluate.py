"""Held-out evaluation: the base model and the adapter side by side, and the gate decision."""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from loraplane.api.finetunejob import EvaluationGate, EvaluationSpec
from loraplane.api.result import Evaluation, Sample
from loraplane.trainer.data import Example

logger = logging.getLogger(__name__)

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """Case-folded, accents and punctuation removed, whitespace collapsed (works for CJK too)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCT.sub(" ", text).strip()


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize(prediction) == normalize(answer))


def contains(prediction: str, answer: str) -> float:
    target = normalize(answer)
    return float(bool(target) and f" {target} " in f" {normalize(prediction)} ")


def _tokens(text: str) -> list[str]:
    norm = normalize(text)
    # CJK has no spaces: score it per character.
    return [t for word in norm.split() for t in (list(word) if re.search(r"[\u3400-\u9fff]", word) else [word])]


def rouge_l(prediction: str, answer: str) -> float:
    """ROUGE-L F1 over normalized tokens (longest common subsequence)."""
    a, b = _tokens(prediction), _tokens(answer)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


METRICS: dict[str, Callable[[str, str], float]] = {"ExactMatch": exact_match, "Contains": contains, "RougeL": rouge_l}


def score(metric: str, predictions: list[str], answers: list[str]) -> float:
    """Mean metric over the examples (0 when there are none)."""
    fn = METRICS[metric]
    return sum(fn(p, a) for p, a in zip(predictions, answers, strict=True)) / len(answers) if answers else 0.0


def gate_passed(gate: EvaluationGate | None, base: float, adapter: float) -> bool:
    """True when the adapter is good enough to serve (always, without a gate)."""
    if gate is None:
        return True
    if gate.min_score is not None and adapter < gate.min_score:
        return False
    return not (gate.min_improvement_over_base is not None and adapter - base < gate.min_improvement_over_base)


def generate(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], *, max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy answers to chat prompts (in order), batched by length with left padding."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
    outputs: list[str] = [""] * len(texts)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = [texts[i] for i in idx]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                outputs[i] = text.strip()
    finally:
        tokenizer.padding_side = side
    return outputs


@dataclass
class SideBySide:
    metric: str
    base_score: float
    adapter_score: float
    base_predictions: list[str]
    adapter_predictions: list[str]


@contextmanager
def _adapter_disabled(model: Any) -> Iterator[None]:
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    with ctx:
        yield


@contextmanager
def _adapter_merged(model: Any) -> Iterator[None]:
    """Generate with the LoRA weights folded into the base weights (no extra matmuls per token), then unfold."""
    if not hasattr(model, "merge_adapter"):
        yield
        return
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


def side_by_side(
    model: Any, tokenizer: Any, examples: list[Example], metric: str, *, max_new_tokens: int
) -> SideBySide:
    """Score the base model (adapter disabled) and the adapter on the same examples."""
    prompts = [e.prompt for e in examples]
    answers = [e.answer for e in examples]
    was_training = model.training
    model.eval()
    try:
        with _adapter_disabled(model):
            base = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
        with _adapter_merged(model):
            tuned = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    finally:
        model.train(was_training)
    return SideBySide(metric, score(metric, base, answers), score(metric, tuned, answers), base, tuned)


def loss_report(losses: dict[str, float]) -> dict[str, float]:
    """`base_loss`/`adapter_loss` (mean answer-token loss on the validation split, or on the held-out set when
    there is none) with their perplexities."""
    report: dict[str, float] = {}
    for who in ("base", "adapter"):
        if f"{who}_loss" in losses:
            report[f"{who}_loss"] = round(losses[f"{who}_loss"], 5)
            report[f"{who}_perplexity"] = round(math.exp(losses[f"{who}_loss"]), 4)
    return report


def evaluation_report(
    model: Any,
    tokenizer: Any,
    held_out: list[Example],
    general_held: list[Example],
    spec: EvaluationSpec,
    losses: dict[str, float] | None = None,
) -> Evaluation | None:
    """result.json's `evaluation`: base vs adapter on the held-out set (task metric, and the loss when
    `losses` has it), the gate, and general-ability retention."""
    if not held_out:
        return None
    max_new = min(128, max(len(tokenizer(e.answer)["input_ids"]) for e in held_out) + 32)
    sbs = side_by_side(model, tokenizer, held_out, spec.metric, max_new_tokens=max_new)
    general = side_by_side(model, tokenizer, general_held, "Contains", max_new_tokens=48) if general_held else None
    return Evaluation(
        metric=sbs.metric,
        base_score=round(sbs.base_score, 4),
        adapter_score=round(sbs.adapter_score, 4),
        examples=len(held_out),
        **loss_report(losses or {}),
        passed=gate_passed(spec.gate, sbs.base_score, sbs.adapter_score),
        samples=[
            Sample(prompt=e.prompt[-1]["content"][:200], answer=e.answer, base=b[:200], adapter=a[:200])
            for e, b, a in list(zip(held_out, sbs.base_predictions, sbs.adapter_predictions, strict=True))[:5]
        ],
        general_base_score=round(general.base_score, 4) if general else None,
        general_adapter_score=round(general.adapter_score, 4) if general else None,
    )
