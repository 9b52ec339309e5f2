"""Built-in industry prompt templates (system prompts) and inline template rendering.

A FineTuneJob names either a built-in template (``spec.dataset.template.builtin``, e.g.
``finance-analyst-zh``) or an inline system prompt (``template.inline``) in which ``{instruction}`` and
``{input}`` are replaced per example. Built-in templates are fixed system prompts; the structured ones
(finance analyst) also fix the answer layout, which :func:`format_structured_answer` renders so that
training data follows the same layout the prompt asks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    """A built-in system prompt."""

    name: str
    language: str  # "zh" or "en"
    system: str
    answer_parts: tuple[str, ...] = ()  # headings of a structured answer, in order; empty if free-form


_FINANCE_ZH = (
    "你作为资深金融分析师，请仅依据用户提供的信息给出专业、审慎的分析。"
    "回答必须严格分为三部分：1) 结论：直接给出判断标签（如 利好/利空/中性）或所问的数值；"
    "2) 依据：简要说明关键依据；3) 风险提示：指出主要的不确定性。"
    "回答简洁，不编造数据，不构成投资建议。"
)
_FINANCE_EN = (
    "You are a senior financial analyst. Answer professionally and cautiously, based only on the "
    "information given. Your answer must have exactly three parts: 1) Conclusion: the label "
    "(e.g. Bullish/Bearish/Neutral) or the figure asked for; 2) Basis: the key evidence, briefly; "
    "3) Risk: the main uncertainty. Be concise, do not invent data, and do not give investment advice."
)
_MEDICAL_ZH = (
    "你作为严谨的临床医生助手，请简明、准确地回答。第一行直接给出答案（如 ICD-10 编码、分类标签、"
    "药物类别或就诊科室），随后最多两句简短说明。信息不足或提示急症时要明确指出。"
    "你的回答不能替代医生的诊断和治疗。"
)
_MEDICAL_EN = (
    "You are a careful clinical assistant. Answer concisely and accurately. Put the direct answer on "
    "the first line (for example the ICD-10 code, the label, the drug class or the department), then "
    "at most two short sentences of explanation. Say so when information is missing or the symptoms "
    "suggest an emergency. You do not replace a doctor's assessment."
)
_LEGAL_ZH = (
    "你作为严谨的法律顾问助手，请简明、准确地回答。第一行直接给出答案（如适用的法律条款、法律术语、"
    "是否的结论或期限），随后最多两句说明依据。答案取决于管辖地或缺少事实时要明确指出。"
    "以上为一般性法律信息，不构成法律意见，具体问题请咨询执业律师。"
)
_LEGAL_EN = (
    "You are a careful legal assistant. Answer concisely and precisely. Put the direct answer on the "
    "first line (for example the applicable rule, the legal term, a yes/no outcome or the deadline), "
    "then at most two short sentences on the basis. Say so when the answer depends on the jurisdiction "
    "or on missing facts. This is general information, not legal advice; consult a qualified lawyer."
)

BUILTIN_TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("finance-analyst-zh", "zh", _FINANCE_ZH, ("结论", "依据", "风险提示")),
        Template("finance-analyst-en", "en", _FINANCE_EN, ("Conclusion", "Basis", "Risk")),
        Template("medical-zh", "zh", _MEDICAL_ZH),
        Template("medical-en", "en", _MEDICAL_EN),
        Template("legal-zh", "zh", _LEGAL_ZH),
        Template("legal-en", "en", _LEGAL_EN),
    )
}

# Language-neutral keys accepted by format_structured_answer, by position of the part.
_STRUCTURED_KEYS: tuple[str, ...] = ("conclusion", "basis", "risk")
_PLACEHOLDER = re.compile(r"\{(instruction|input)\}")


def get_template(name: str) -> Template:
    """The built-in template called `name`; ValueError (listing the known names) if there is none."""
    try:
        return BUILTIN_TEMPLATES[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_TEMPLATES))
        raise ValueError(f"unknown built-in template {name!r}; known templates: {known}") from None


def render_inline(template: str, *, instruction: str = "", input: str = "") -> str:
    """`template` with {instruction} and {input} replaced in one pass.

    No str.format: other braces stay as they are, and braces (or placeholder-like text) inside the
    replacement values are inserted literally, never expanded again.
    """
    values = {"instruction": instruction, "input": input}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def system_prompt(builtin: str | None, inline: str | None, *, instruction: str = "", input: str = "") -> str | None:
    """The system prompt for one example: a built-in template's, or the rendered inline template.

    Returns None when neither is set. Raises ValueError for an unknown built-in name or when both are set.
    """
    if builtin is not None and inline is not None:
        raise ValueError("set exactly one of template.builtin or template.inline")
    if builtin is not None:
        return get_template(builtin).system
    if inline is not None:
        return render_inline(inline, instruction=instruction, input=input)
    return None


def format_structured_answer(template_name: str, parts: dict[str, str]) -> str:
    """A structured answer in the layout the template asks for.

    `parts` is keyed by the template's part headings (e.g. "结论", "依据", "风险提示") or by the
    language-neutral keys "conclusion", "basis", "risk". For finance-analyst-en::

        1) Conclusion: Bullish
        2) Basis: ...
        3) Risk: ...
    """
    template = get_template(template_name)
    if not template.answer_parts:
        raise ValueError(f"template {template_name!r} is free-form: it has no structured answer parts")
    sep = "：" if template.language == "zh" else ": "
    lines = []
    for index, heading in enumerate(template.answer_parts):
        neutral = _STRUCTURED_KEYS[index] if index < len(_STRUCTURED_KEYS) else heading
        text = parts.get(heading, parts.get(neutral))
        if text is None or not text.strip():
            raise ValueError(f"template {template_name!r}: missing answer part {heading!r} ({neutral})")
        lines.append(f"{index + 1}) {heading}{sep}{text.strip()}")
    allowed = set(template.answer_parts) | set(_STRUCTURED_KEYS[: len(template.answer_parts)])
    unknown = sorted(set(parts) - allowed)
    if unknown:
        raise ValueError(f"template {template_name!r}: unknown answer parts {unknown}; expected {sorted(allowed)}")
    return "\n".join(lines)
