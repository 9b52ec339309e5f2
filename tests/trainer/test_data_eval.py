"""Unit tests of the trainer's pure parts: record formats, splits, mixing, metrics, gate, result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraplane.api.finetunejob import DatasetSpec, EvaluationGate
from loraplane.api.trainer_spec import Mounts
from loraplane.trainer import data
from loraplane.trainer.errors import InvalidData
from loraplane.trainer.evaluate import contains, exact_match, gate_passed, rouge_l, score
from loraplane.trainer.result import adapter_digest, file_digests, summary, verify, write_result


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
    write_result(tmp_path, {"adapter": {"files": files, "sha256": adapter_digest(files)}})
    assert verify(tmp_path) == []
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x01" * 10)
    assert verify(tmp_path) == ["adapter_model.safetensors: sha256 mismatch"]


def test_summary_fits_termination_message() -> None:
    big = {
        "ok": True,
        "message": "x" * 10000,
        "metrics": {f"m{i}": float(i) for i in range(500)},
        "adapter": {"sha256": "a"},
    }
    text = summary(big)
    assert len(text.encode()) <= 4096 and json.loads(text)["adapter"]["sha256"] == "a"
