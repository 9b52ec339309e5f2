"""Training data: read JSON/JSONL, recognise the format, apply the prompt template, split, tokenize.

Every record becomes an :class:`Example` (chat messages for the prompt, the answer text, and the
short scorable `answer` when the record has one). Tokenization uses the tokenizer's chat template and
masks the prompt, so the loss covers the answer tokens only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loraplane.api.finetunejob import DatasetSpec
from loraplane.api.trainer_spec import Mounts
from loraplane.trainer.errors import InvalidData, InvalidSpec

logger = logging.getLogger(__name__)

Format = Literal["InputOutput", "Alpaca", "Chat"]
Message = dict[str, str]
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    """One training or evaluation example."""

    prompt: list[Message]  # system (optional) + user turns (+ earlier assistant turns for chat)
    completion: str  # the assistant answer that is trained on
    answer: str  # what the task metric checks (the record's `answer`, else the completion)


@dataclass
class DataSplits:
    train: list[Example]
    validation: list[Example]
    general: list[Example] = field(default_factory=list)  # mixed into train (already included there)
    dataset_hash: str = ""
    records: int = 0


def resolve_data_uri(uri: str, mounts: Mounts, *, cache_dir: Path | None = None, token: str | None = None) -> Path:
    """The local file a dataset URI names (downloading hub files into the cache)."""
    scheme, _, rest = uri.partition("://")
    if scheme == "file":
        path = Path("/" + rest.lstrip("/"))
    elif scheme == "pvc":
        path = Path(mounts.pvc_root) / rest
    elif scheme == "configmap":
        path = Path(mounts.configmap_root) / rest
    elif scheme == "builtin":
        from loraplane.trainer.demo_data import builtin_dataset_path

        name, heldout = (rest[: -len("-heldout")], True) if rest.endswith("-heldout") else (rest, False)
        try:
            return builtin_dataset_path(name, "heldout" if heldout else "train")
        except ValueError as exc:
            raise InvalidSpec(str(exc), field="spec.dataset.uri") from exc
    elif scheme in ("hf", "modelscope"):
        return _download_hub_file(scheme, rest, cache_dir or Path("."), token)
    else:
        raise InvalidSpec(f"unsupported dataset URI scheme {scheme!r}", field="spec.dataset.uri")
    if not path.is_file():
        raise InvalidData(f"{uri} -> {path}: no such file", field="spec.dataset.uri")
    return path


def _download_hub_file(scheme: str, rest: str, cache_dir: Path, token: str | None) -> Path:
    """hf://ORG/NAME[@REV]/FILE or modelscope://ORG/NAME[@REV]/FILE (a file in a dataset repository)."""
    parts = rest.split("/", 2)
    if len(parts) < 3:
        raise InvalidSpec("a hub dataset URI must name a file: ORG/NAME[@REV]/FILE.jsonl", field="spec.dataset.uri")
    name, _, revision = parts[1].partition("@")
    repo_id, filename = f"{parts[0]}/{name}", parts[2]
    if scheme == "hf":
        from huggingface_hub import hf_hub_download

        return Path(
            hf_hub_download(
                repo_id,
                filename,
                repo_type="dataset",
                revision=revision or None,
                cache_dir=str(cache_dir / "hf"),
                token=token,
            )
        )
    from modelscope.hub.file_download import dataset_file_download

    return Path(
        dataset_file_download(
            repo_id, filename, revision=revision or "master", cache_dir=str(cache_dir / "modelscope"), token=token
        )
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records from a .jsonl file (one object per line) or a .json file (a list, or {"data": [...]})."""
    text = path.read_text(encoding="utf-8")
    records: list[Any]
    if path.suffix == ".jsonl" or (text.lstrip()[:1] == "{" and "\n{" in text.strip()):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidData(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidData(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        records = loaded.get("data", []) if isinstance(loaded, dict) else loaded
    if not isinstance(records, list) or not records:
        raise InvalidData(f"{path}: no records (expected a JSON list, JSONL lines, or {{'data': [...]}})")
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise InvalidData(f"{path}: record {number} is {type(record).__name__}, expected an object")
    return records


def detect_format(record: dict[str, Any]) -> Format:
    """The format of a record, from its keys."""
    if "messages" in record:
        return "Chat"
    if "instruction" in record and "output" in record:
        return "Alpaca"
    if "input" in record and "output" in record:
        return "InputOutput"
    raise InvalidData(
        f"cannot tell the format of a record with keys {sorted(record)}: expected {{input, output}}, "
        "{instruction, input, output} or {messages}"
    )


def _text(record: dict[str, Any], key: str, number: int, *, required: bool = True) -> str:
    value = record.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidData(f"record {number}: '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidData(f"record {number}: '{key}' is empty")
    return value


def to_example(record: dict[str, Any], fmt: Format, number: int, system: str | None) -> Example:
    """One record in `fmt` as an Example, with `system` as the system prompt when the record has none."""
    if fmt == "Chat":
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidData(f"record {number}: 'messages' must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise InvalidData(f"record {number}: each message needs a role of system/user/assistant")
            if not isinstance(m.get("content"), str):
                raise InvalidData(f"record {number}: each message needs a string 'content'")
        if messages[-1]["role"] != "assistant":
            raise InvalidData(f"record {number}: the last message must be the assistant's answer")
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
        if system and prompt[0]["role"] != "system":
            prompt.insert(0, {"role": "system", "content": system})
        completion = messages[-1]["content"]
    else:
        output = _text(record, "output", number)
        if fmt == "Alpaca":
            user = _text(record, "instruction", number)
            extra = _text(record, "input", number, required=False)
            if extra.strip():
                user = f"{user}\n\n{extra}"
        else:
            user = _text(record, "input", number)
        prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        completion = output
    answer = record.get("answer")
    return Example(
        prompt=prompt, completion=completion, answer=answer if isinstance(answer, str) and answer else completion
    )


def examples_from_records(records: list[dict[str, Any]], spec: DatasetSpec, system_for: Any = None) -> list[Example]:
    """All records as Examples; `system_for(record)` gives the templated system prompt (or None)."""
    fmt: Format = detect_format(records[0]) if spec.format == "Auto" else spec.format
    out = []
    for number, record in enumerate(records, start=1):
        system = system_for(record) if system_for else None
        out.append(to_example(record, fmt, number, system))
    return out


def records_hash(records: list[dict[str, Any]]) -> str:
    """sha256 over the canonical JSON of the records (order matters)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def split(examples: list[Example], validation_split: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic shuffle, then the last `validation_split` share held out (at least one when > 0)."""
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n_val = round(len(shuffled) * validation_split)
    if validation_split > 0 and n_val == 0 and len(shuffled) > 1:
        n_val = 1
    if n_val >= len(shuffled):
        raise InvalidData(f"validationSplit {validation_split} leaves no training examples out of {len(shuffled)}")
    return shuffled[: len(shuffled) - n_val], shuffled[len(shuffled) - n_val :]


def general_mix(domain_count: int, ratio: float, general: list[Example], seed: int) -> list[Example]:
    """General examples so that they make up `ratio` of the mixed training set (sampled with repetition if short)."""
    if ratio <= 0 or not general:
        return []
    wanted = round(domain_count * ratio / (1 - ratio))
    rng = random.Random(seed + 1)
    pool = list(general)
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(wanted)]


@dataclass
class Tokenized:
    rows: list[dict[str, list[int]]]
    truncated: int
    tokens: int
    completion_tokens: int


def tokenize(examples: list[Example], tokenizer: Any, max_length: int) -> Tokenized:
    """input_ids and labels (prompt masked with -100) per example, cut at `max_length` and counted."""
    rows = []
    truncated = tokens = completion_tokens = 0
    for ex in examples:
        prompt_ids = _chat_ids(tokenizer, ex.prompt, add_generation_prompt=True)
        full_ids = _chat_ids(
            tokenizer, [*ex.prompt, {"role": "assistant", "content": ex.completion}], add_generation_prompt=False
        )
        if full_ids[: len(prompt_ids)] != prompt_ids:
            # Templates that rewrite earlier turns: fall back to prompt + answer + eos.
            answer_ids = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
            full_ids = (
                prompt_ids + answer_ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
            )
        labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) :]
        if len(full_ids) > max_length:
            truncated += 1
            full_ids, labels = full_ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            continue  # the prompt alone fills max_length: nothing to learn from this example
        tokens += len(full_ids)
        completion_tokens += sum(1 for label in labels if label != IGNORE_INDEX)
        rows.append({"input_ids": full_ids, "labels": labels})
    return Tokenized(rows=rows, truncated=truncated, tokens=tokens, completion_tokens=completion_tokens)


def _chat_ids(tokenizer: Any, messages: list[Message], *, add_generation_prompt: bool) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    # No chat template: a plain "role: content" layout.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    if add_generation_prompt:
        text += "assistant: "
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not add_generation_prompt and tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return list(ids)
