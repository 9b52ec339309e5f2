"""Unit tests of the trainer's pure parts: record formats, splits, mixing, metrics, gate, result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loraplane.api.artifact import adapter_digest, file_digests, verify
from loraplane.api.finetunejob import DatasetSpec, EvaluationGate
from loraplane.api.result import AdapterFiles, ResultSummary, TrainingResult
from loraplane.api.trainer_spec import Mounts
from loraplane.trainer import data
from loraplane.trainer.errors import InvalidData
from loraplane.trainer.evaluate import contains, exact_match, gate_passed, rouge_l, score


def spec(**kw: object) -> DatasetSpec:
    return DatasetSpec.model_validate({"uri": "file:///x.jsonl", **kw})


def test_formats_are_detected_and_converted() -> None:
    alpaca = {"instruction": "Code for asthma?", "input": "ICD-10", "output": "J45", "answer": "J45"}
    io = {"input": "2+2?", "output": "4"}
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert [data.detect_format(r) for r in (alpaca, io, chat)] == ["Alpaca", "InputOutput", "Chat"]
    ex = data.to_example(alpaca, "Alpaca", 1, "You are a clinician.")
    assert ex.prompt == [
        {"role": "system", "content": "You are a clinician."},
        {"role": "user", "content": "Code for asthma?\n\nICD-10"},
    ]
    assert (ex.completion, ex.answer) == ("J45", "J45")
    assert data.to_example(io, "InputOutput", 1, None).prompt == [{"role": "user", "content": "2+2?"}]
    chat_ex = data.to_example(chat, "Chat", 1, "sys")
    assert chat_ex.prompt[0] == {"role": "system", "content": "sys"} and chat_ex.completion == "hello"


@pytest.mark.parametrize(
    ("record", "fmt", "words"),
    [
        ({"instruction": "", "output": "x"}, "Alpaca", "'instruction' is empty"),
        ({"input": 3, "output": "x"}, "InputOutput", "must be a string"),
        ({"messages": [{"role": "user", "content": "q"}]}, "Chat", "last message must be the assistant"),
        ({"messages": [{"role": "bot", "content": "q"}]}, "Chat", "role"),
    ],
)
def test_bad_records_name_the_record_and_key(record: dict[str, object], fmt: data.Format, words: str) -> None:
    with pytest.raises(InvalidData, match=words):
        data.to_example(record, fmt, 7, None)


def test_unknown_shape_is_reported() -> None:
    with pytest.raises(InvalidData, match="cannot tell the format"):
        data.detect_format({"question": "q", "reply": "a"})


def test_read_json_jsonl_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"input": "a", "output": "b"}\n\n{"input": "c", "output": "d"}\n')
    (tmp_path / "b.json").write_text(json.dumps({"data": [{"input": "a", "output": "b"}]}))
    (tmp_path / "bad.jsonl").write_text('{"input": "a", "output": "b"}\n{oops\n')
    assert len(data.read_records(tmp_path / "a.jsonl")) == 2
    assert len(data.read_records(tmp_path / "b.json")) == 1
    with pytest.raises(InvalidData, match=r"bad.jsonl:2"):
        data.read_records(tmp_path / "bad.jsonl")


def test_uri_resolution(tmp_path: Path) -> None:
    mounts = Mounts(pvc_root=str(tmp_path / "pvc"), configmap_root=str(tmp_path / "cm"))
    (tmp_path / "pvc" / "claim").mkdir(parents=True)
    (tmp_path / "pvc" / "claim" / "d.jsonl").write_text("{}")
    assert data.resolve_data_uri("pvc://claim/d.jsonl", mounts) == tmp_path / "pvc/claim/d.jsonl"
    with pytest.raises(InvalidData, match="no such file"):
        data.resolve_data_uri("configmap://cm/key", mounts)
    assert data.resolve_data_uri("builtin://medical", mounts).is_file()


def test_split_is_deterministic_and_mix_has_ratio() -> None:
    examples = [data.Example([{"role": "user", "content": str(i)}], str(i), str(i)) for i in range(100)]
    train, val = data.split(examples, 0.1, seed=3)
    assert (len(train), len(val)) == (90, 10) and data.split(examples, 0.1, seed=3) == (train, val)
    general = examples[:7]
    mixed = data.general_mix(90, 0.1, general, seed=3)
    assert len(mixed) == 10  # 10 / (90 + 10) = 10%
    assert data.general_mix(90, 0.0, general, seed=3) == []


def test_records_hash_changes_with_content() -> None:
    a = [{"input": "a", "output": "b"}]
    assert data.records_hash(a) == data.records_hash([{"output": "b", "input": "a"}])
    assert data.records_hash(a) != data.records_hash([{"input": "a", "output": "c"}])


def test_metrics() -> None:
    assert exact_match("  E11. ", "e11") == 1.0
    assert contains("The code is E11.", "E11") == 1.0
    assert contains("The code is E110.", "E11") == 0.0  # whole words only
    assert contains("结论：利好。依据：…", "利好") == 1.0
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert 0 < rouge_l("the cat sat on the mat", "the cat lay") < 1
    assert score("Contains", ["a b", "c"], ["b", "d"]) == 0.5


def test_gate() -> None:
    assert gate_passed(None, 0.1, 0.0)
    assert gate_passed(EvaluationGate(min_score=0.5), 0.0, 0.6)
    assert not gate_passed(EvaluationGate(min_score=0.5), 0.0, 0.4)
    assert not gate_passed(EvaluationGate(min_improvement_over_base=0.2), 0.5, 0.6)
    assert gate_passed(EvaluationGate(min_improvement_over_base=0.2), 0.3, 0.6)


def test_result_files_digest_and_verify(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "x").write_text("ignored")
    files = file_digests(tmp_path)
    assert sorted(files) == ["adapter_config.json", "adapter_model.safetensors"]
    result = TrainingResult(ok=True, code=0, reason="Succeeded", adapter=AdapterFiles(files=files, sha256="0" * 64))
    result.write(tmp_path)
    assert verify(tmp_path) == [f"adapter.sha256 {'0' * 64} does not match its file list ({adapter_digest(files)})"]
    result.model_copy(update={"adapter": AdapterFiles(files=files, sha256=adapter_digest(files))}).write(tmp_path)
    assert verify(tmp_path) == []
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x01" * 10)
    assert verify(tmp_path) == ["adapter_model.safetensors: sha256 mismatch"]


def test_summary_fits_termination_message() -> None:
    files = {f"shard-{i}.safetensors": "f" * 64 for i in range(100)}
    big = TrainingResult(
        ok=True,
        code=0,
        reason="Succeeded",
        message="x" * 10000,
        metrics={f"m{i}": float(i) for i in range(500)},
        adapter=AdapterFiles(sha256="a", files=files),
    )
    text = big.summary().encode()
    parsed = ResultSummary.parse(text)
    assert len(text.encode()) <= 4096 and parsed is not None and parsed.adapter is not None
    assert parsed.adapter.sha256 == "a" and parsed.adapter.files == {}  # the file list stays in result.json
    assert len(parsed.message) == 1024 and parsed.metrics  # cut to fit, but not emptied


# ---------------------------------------------------------------------------------------------------------------------
# Tokenization (the tiny ChatML tokenizer of tests/support/tiny.py): the loss covers the answer tokens only


IGNORED = -100  # the label torch's cross-entropy (and transformers' loss) skips


def _tokenizer(tiny_model: Path, chat_template: str | None = "keep") -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    if chat_template != "keep":
        tokenizer.chat_template = chat_template
    return tokenizer


def _ids(encoded: Any) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


SYSTEM_USER = data.Example(
    prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the code for item 7?"}],
    completion="The code is E7.",
    answer="E7",
)
MULTI_TURN = data.Example(  # a Chat record: the earlier assistant turn is part of the prompt, never trained on
    prompt=[
        {"role": "user", "content": "What is the code for item 3?"},
        {"role": "assistant", "content": "The code is E3."},
        {"role": "user", "content": "And for item 4?"},
    ],
    completion="The code is E4.",
    answer="E4",
)


@pytest.mark.parametrize("example", [SYSTEM_USER, MULTI_TURN], ids=["system-user", "multi-turn"])
def test_tokenize_masks_the_prompt_and_trains_on_the_answer_only(tiny_model: Path, example: data.Example) -> None:
    tokenizer = _tokenizer(tiny_model)
    result = data.tokenize([example], tokenizer, max_length=512)
    (row,) = result.rows
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) and result.truncated == 0 and result.tokens == len(ids)

    # Everything up to and including the generation prompt `<|im_start|>assistant\n` is masked ...
    prompt = _ids(tokenizer.apply_chat_template(example.prompt, tokenize=True, add_generation_prompt=True))
    assert ids[: len(prompt)] == prompt
    assert labels[: len(prompt)] == [IGNORED] * len(prompt)
    masked_text = tokenizer.decode(ids[: len(prompt)])
    assert masked_text.endswith("<|im_start|>assistant\n")
    assert all(m["content"] in masked_text for m in example.prompt)  # system, user and earlier assistant turns
    # ... and everything after it is trained on, label = input id: the answer, then the template's end of turn.
    assert labels[len(prompt) :] == ids[len(prompt) :]
    answer_labels = [label for label in labels if label != IGNORED]
    assert tokenizer.decode(answer_labels) == example.completion + "<|im_end|>\n"
    assert tokenizer.eos_token_id in answer_labels  # the model learns to stop
    assert result.completion_tokens == len(answer_labels)


def test_tokenize_uses_the_tokenizers_chat_template(tiny_model: Path) -> None:
    tokenizer = _tokenizer(tiny_model)
    (row,) = data.tokenize([SYSTEM_USER], tokenizer, max_length=512).rows
    messages = [*SYSTEM_USER.prompt, {"role": "assistant", "content": SYSTEM_USER.completion}]
    assert row["input_ids"] == _ids(tokenizer.apply_chat_template(messages, tokenize=True))
    assert tokenizer.decode(row["input_ids"]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the code for item 7?<|im_end|>\n"
        "<|im_start|>assistant\nThe code is E7.<|im_end|>\n"
    )

    # Another template, another layout: the tokenizer's own template is what is followed.
    tokenizer.chat_template = (
        "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|endoftext|>' -}}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )
    (row,) = data.tokenize([SYSTEM_USER], tokenizer, max_length=512).rows
    assert row["input_ids"] == _ids(tokenizer.apply_chat_template(messages, tokenize=True))
    answer = tokenizer.decode([label for label in row["labels"] if label != IGNORED])
    assert answer == "The code is E7.<|endoftext|>"


def test_tokenize_without_a_chat_template_uses_a_plain_role_layout(tiny_model: Path) -> None:
    tokenizer = _tokenizer(tiny_model, chat_template=None)
    (row,) = data.tokenize([SYSTEM_USER], tokenizer, max_length=512).rows
    prompt = _ids(tokenizer("system: Be brief.\nuser: What is the code for item 7?\nassistant: "))
    answer = _ids(tokenizer("The code is E7.", add_special_tokens=False))
    # "assistant: " + answer tokenizes differently from the prompt alone (byte-level BPE merges " The"), so the
    # tokens are prompt + answer + eos, put together token-wise: the prompt the model sees at inference, unchanged.
    assert row["input_ids"] == prompt + answer + [tokenizer.eos_token_id]
    assert row["labels"] == [IGNORED] * len(prompt) + answer + [tokenizer.eos_token_id]
    assert tokenizer.decode(row["input_ids"]) == (
        "system: Be brief.\nuser: What is the code for item 7?\nassistant: The code is E7.<|im_end|>"
    )


def test_tokenize_template_that_rewrites_earlier_turns_falls_back_to_prompt_answer_eos(tiny_model: Path) -> None:
    # The header counts the messages: the full conversation does not start with the prompt's tokens.
    tokenizer = _tokenizer(tiny_model)
    tokenizer.chat_template = "{{- messages | length -}}\n" + (tokenizer.chat_template or "")
    (row,) = data.tokenize([SYSTEM_USER], tokenizer, max_length=512).rows
    prompt = _ids(tokenizer.apply_chat_template(SYSTEM_USER.prompt, tokenize=True, add_generation_prompt=True))
    answer = _ids(tokenizer("The code is E7.", add_special_tokens=False))
    assert row["input_ids"] == prompt + answer + [tokenizer.eos_token_id]
    assert row["labels"] == [IGNORED] * len(prompt) + answer + [tokenizer.eos_token_id]


def test_tokenize_truncates_and_drops_examples_with_no_answer_left(tiny_model: Path) -> None:
    tokenizer = _tokenizer(tiny_model)
    (full,) = data.tokenize([SYSTEM_USER], tokenizer, max_length=512).rows
    n_prompt = full["labels"].count(IGNORED)
    cut = data.tokenize([SYSTEM_USER], tokenizer, max_length=n_prompt + 2)
    assert cut.truncated == 1 and cut.rows[0]["input_ids"] == full["input_ids"][: n_prompt + 2]
    assert cut.completion_tokens == 2
    gone = data.tokenize([SYSTEM_USER], tokenizer, max_length=n_prompt)  # only the prompt fits: nothing to learn
    assert (gone.rows, gone.truncated, gone.tokens) == ([], 1, 0)
