"""Built-in industry prompt templates and inline template rendering."""

from __future__ import annotations

from typing import get_args

import pytest

from loraplane.api.finetunejob import BuiltinTemplate
from loraplane.trainer.templates import (
    BUILTIN_TEMPLATES,
    Template,
    format_structured_answer,
    get_template,
    system_prompt,
)


def test_registry_matches_the_api_names() -> None:
    assert set(BUILTIN_TEMPLATES) == set(get_args(BuiltinTemplate))
    for name, template in BUILTIN_TEMPLATES.items():
        assert isinstance(template, Template) and template.name == name
        assert template.language == name.rsplit("-", 1)[1]
        assert len(template.system) > 80


@pytest.mark.parametrize("domain", ["finance-analyst", "medical", "legal"])
def test_every_domain_has_zh_and_en(domain: str) -> None:
    zh, en = get_template(f"{domain}-zh"), get_template(f"{domain}-en")
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh.system)
    assert en.system.isascii()
    assert len(zh.answer_parts) == len(en.answer_parts)


def test_finance_analyst_follows_the_seed() -> None:
    zh = get_template("finance-analyst-zh")
    assert zh.system.startswith("你作为资深金融分析师，")
    assert zh.answer_parts == ("结论", "依据", "风险提示")
    for part in ("结论", "依据", "风险提示", "利好", "利空", "中性"):
        assert part in zh.system
    en = get_template("finance-analyst-en")
    assert en.answer_parts == ("Conclusion", "Basis", "Risk")
    for part in ("Conclusion", "Basis", "Risk", "Bullish", "Bearish", "Neutral"):
        assert part in en.system


@pytest.mark.parametrize("name", ["medical-zh", "medical-en", "legal-zh", "legal-en"])
def test_medical_and_legal_are_free_form_with_a_disclaimer(name: str) -> None:
    template = get_template(name)
    assert template.answer_parts == ()
    assert any(word in template.system for word in ("doctor", "医生", "lawyer", "律师"))
    with pytest.raises(ValueError, match="free-form"):
        format_structured_answer(name, {"conclusion": "x"})


def test_builtin_system_prompt_ignores_the_example() -> None:
    got = system_prompt("medical-en", None, instruction="{x}", input="y")
    assert got == BUILTIN_TEMPLATES["medical-en"].system


def test_inline_template_is_rendered() -> None:
    got = system_prompt(None, "Task: {instruction} | Data: {input} | {other} {", instruction="Classify", input="ABC")
    assert got == "Task: Classify | Data: ABC | {other} {"


def test_inline_template_with_braces_in_user_text() -> None:
    instruction = 'Parse {"a": 1} and {0} and {input} and {'
    got = system_prompt(None, "Q={instruction}; I={input}", instruction=instruction, input="}{ {instruction}")
    # Values go in literally, once: placeholders inside user text are not expanded again.
    assert got == f"Q={instruction}; I=}}{{ {{instruction}}"


def test_no_template_and_both_templates() -> None:
    assert system_prompt(None, None) is None
    with pytest.raises(ValueError, match="exactly one"):
        system_prompt("medical-en", "inline")


def test_unknown_builtin_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown built-in template 'finance'") as info:
        system_prompt("finance", None)
    for name in BUILTIN_TEMPLATES:
        assert name in str(info.value)


def test_structured_answer_en_and_zh() -> None:
    en = format_structured_answer(
        "finance-analyst-en", {"conclusion": "Bullish", "basis": "Guidance raised.", "risk": "Priced in."}
    )
    assert en == "1) Conclusion: Bullish\n2) Basis: Guidance raised.\n3) Risk: Priced in."
    zh = format_structured_answer(
        "finance-analyst-zh", {"结论": "利好", "依据": "上调业绩指引。", "风险提示": "或已计入股价。"}
    )
    assert zh == "1) 结论：利好\n2) 依据：上调业绩指引。\n3) 风险提示：或已计入股价。"


def test_structured_answer_rejects_missing_and_unknown_parts() -> None:
    with pytest.raises(ValueError, match="missing answer part 'Risk'"):
        format_structured_answer("finance-analyst-en", {"conclusion": "Bullish", "basis": "b", "risk": " "})
    with pytest.raises(ValueError, match="unknown answer parts"):
        format_structured_answer("finance-analyst-en", {"conclusion": "a", "basis": "b", "risk": "c", "extra": "d"})
    with pytest.raises(ValueError, match="unknown built-in template"):
        format_structured_answer("finance", {})
