"""What vLLM can serve, and LoRA defaults per architecture.

Pure functions shared by the operator (refuse a spec before any GPU hour is spent) and the trainer
(pick target modules, refuse again with the model's real module names in hand).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Architecture family -> default target modules. Qwen-7B v1 ("QWenLMHeadModel") fuses q/k/v into c_attn.
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "qwen": ["c_attn"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
}
ALL_LINEAR = "all-linear"

# Model ids (the NAME part of hf://ORG/NAME) whose architecture is known from the name alone.
_KNOWN_BY_NAME: list[tuple[re.Pattern[str], str, bool]] = [
    # (pattern, architecture family, needs trust_remote_code)
    (re.compile(r"^qwen-(1_8b|7b|14b|72b)(-chat)?(-int\d)?$", re.I), "qwen", True),
    (re.compile(r"^qwen(1\.5|2|2\.5)-", re.I), "qwen2", False),
    (re.compile(r"^qwen3-", re.I), "qwen3", False),
    (re.compile(r"^(meta-)?llama-?[23]", re.I), "llama", False),
    (re.compile(r"^smollm2?-", re.I), "llama", False),
    (re.compile(r"^mistral-", re.I), "mistral", False),
]


@dataclass(frozen=True)
class KnownModel:
    family: str
    needs_remote_code: bool


def known_model(uri: str) -> KnownModel | None:
    """Architecture family of a hub model, when its name tells it; None when unknown."""
    if not uri.startswith(("hf://", "modelscope://")):
        return None
    name = uri.split("://", 1)[1].split("@", 1)[0].split("/")[-1]
    for pattern, family, remote in _KNOWN_BY_NAME:
        if pattern.search(name):
            return KnownModel(family, remote)
    return None


def default_target_modules(family: str) -> list[str]:
    """The default LoRA target modules of an architecture family (q_proj/v_proj when unknown)."""
    return DEFAULT_TARGET_MODULES.get(family, ["q_proj", "v_proj"])


@dataclass(frozen=True)
class Problem:
    """One reason a spec cannot run: the field it concerns and what was expected."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def servability_problems(
    *,
    bias: str,
    use_dora: bool,
    modules_to_save: list[str] | None,
    target_modules: list[str] | None,
    family: str | None,
    prefix: str = "spec.lora",
) -> list[Problem]:
    """Reasons vLLM could not serve an adapter with these settings (empty when it can)."""
    problems: list[Problem] = []
    if use_dora:
        problems.append(Problem(f"{prefix}.useDora", "vLLM cannot serve DoRA adapters; set useDora: false"))
    if modules_to_save:
        problems.append(
            Problem(f"{prefix}.modulesToSave", "vLLM cannot serve adapters with modules_to_save; remove the field")
        )
    if bias != "none":
        problems.append(Problem(f"{prefix}.bias", f"vLLM serves only bias 'none', got {bias!r}"))
    if target_modules and family is not None and ALL_LINEAR not in target_modules:
        expected = DEFAULT_TARGET_MODULES.get(family)
        if family == "qwen" and any(m in ("q_proj", "k_proj", "v_proj") for m in target_modules):
            problems.append(
                Problem(
                    f"{prefix}.targetModules",
                    f"Qwen-7B (v1) has fused attention 'c_attn' and no q_proj/k_proj/v_proj; use {expected} "
                    "(or omit targetModules for the default)",
                )
            )
        elif "c_attn" in target_modules and "c_attn" not in default_target_modules(family):  # gpt2 has c_attn
            problems.append(
                Problem(f"{prefix}.targetModules", f"{family} models have no 'c_attn'; use e.g. {expected}")
            )
    return problems
