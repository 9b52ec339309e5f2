"""The built-in demo data sets: sizes, shape, train/held-out separation, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hack.generate_demo_data import SENTIMENT_EVENTS, write_all
from loraplane.trainer.demo_data import BUILTIN_DATASETS, builtin_dataset_path
from loraplane.trainer.evaluate import contains

MIN_SIZES = {"medical": (300, 60), "finance": (300, 60), "general": (200, 60)}
MAX_BYTES = 300_000


def load(name: str, split: str) -> list[dict[str, str]]:
    lines = builtin_dataset_path(name, split).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def question(record: dict[str, str]) -> str:
    return f"{record['instruction']}\n{record['input']}".strip()


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_sizes_and_files(name: str) -> None:
    min_train, min_heldout = MIN_SIZES[name]
    assert len(load(name, "train")) >= min_train
    assert len(load(name, "heldout")) >= min_heldout
    for split in ("train", "heldout"):
        assert builtin_dataset_path(name, split).stat().st_size < MAX_BYTES


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_records_are_alpaca_with_a_scorable_answer(name: str, split: str) -> None:
    for record in load(name, split):
        assert set(record) == {"instruction", "input", "output", "answer", "task"}
        assert all(isinstance(v, str) for v in record.values())
        assert record["instruction"].strip() and record["output"].strip() and record["answer"].strip()
        assert record["answer"] in record["output"]
        assert contains(record["output"], record["answer"]) == 1.0  # the real metric scores the reference
        assert contains(question(record), record["answer"]) == 0.0  # echoing the question scores nothing


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_heldout_questions_are_not_training_questions(name: str) -> None:
    train = {question(r) for r in load(name, "train")}
    heldout = [question(r) for r in load(name, "heldout")]
    assert not train & set(heldout)
    assert len(set(heldout)) == len(heldout)


def test_general_heldout_items_are_unseen() -> None:
    train = {r["answer"] + "|" + r["output"] for r in load("general", "train")}
    assert not any(r["answer"] + "|" + r["output"] in train for r in load("general", "heldout"))


def test_medical_heldout_drugs_are_unseen() -> None:
    def drug(record: dict[str, str]) -> str:
        return record["output"].split("\n")[1].split()[0]

    train = {drug(r) for r in load("medical", "train") if r["task"] == "drug_class"}
    heldout = {drug(r) for r in load("medical", "heldout") if r["task"] == "drug_class"}
    assert heldout and not train & heldout


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_finance_outputs_have_the_three_parts(split: str) -> None:
    labels = set(SENTIMENT_EVENTS)
    for record in load("finance", split):
        lines = record["output"].split("\n")
        assert [line.split(":", 1)[0] for line in lines] == ["1) Conclusion", "2) Basis", "3) Risk"]
        assert lines[0] == f"1) Conclusion: {record['answer']}"
        if record["task"] == "sentiment":  # exactly one label in the answer: no free credit for listing them
            assert [label for label in labels if label in record["output"]] == [record["answer"]]


def test_every_task_is_in_both_splits() -> None:
    for name in BUILTIN_DATASETS:
        assert {r["task"] for r in load(name, "train")} == {r["task"] for r in load(name, "heldout")}


def test_regeneration_matches_the_committed_files(tmp_path: Path) -> None:
    for path in write_all(tmp_path):
        name, split = path.parent.name, path.stem
        assert path.read_bytes() == builtin_dataset_path(name, split).read_bytes(), f"{name}/{split} is stale"


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(ValueError, match="known datasets: medical, finance, general"):
        builtin_dataset_path("legal")
    with pytest.raises(ValueError, match="known splits"):
        builtin_dataset_path("medical", "test")
