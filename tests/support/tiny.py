"""Tiny models, tokenizers, GGUF files and hub caches built on the fly, for fast offline tests.

Everything here is deterministic and takes well under two seconds:

- :func:`build_tokenizer`: a byte-level BPE tokenizer (vocabulary ~1000) trained on generated English and digits,
  with ChatML special tokens and a ChatML ``chat_template``;
- :func:`build_tiny_llama`: a randomly initialised 2-layer Llama (head_dim 32, which vLLM's CPU attention kernel
  accepts) saved as a plain safetensors checkpoint together with the tokenizer (:func:`build_tiny_base`: both);
- :func:`build_tiny_gguf`: the same checkpoint written as a llama.cpp GGUF file (F32, F16 or Q8_0);
- :func:`populate_hf_cache`: a Hugging Face hub cache laid out exactly as ``huggingface_hub.snapshot_download`` leaves
  it, so ``snapshot_download(..., cache_dir=...)`` finds the model without any network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

IM_START, IM_END, PAD, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|pad|>", "<|endoftext|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, PAD]

# ChatML, as Qwen2/SmolLM2 instruct models use it: every message is `<|im_start|>ROLE\nCONTENT<|im_end|>\n`.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_WORDS = (
    "the a an is are was were be of to in on for with at by from and or not what which who how why when where "
    "code item answer question patient doctor dose tablet blood pressure heart rate fever pain bank loan rate "
    "interest account balance market price stock bond tax income capital city country france paris london river "
    "water fire earth light day night year month week hour minute number value total sum result please explain "
    "short long good bad high low new old first last next model data train test you i we they it this that"
)


def corpus(lines: int = 400) -> list[str]:
    """Deterministic English-ish sentences with digits (what the tiny tokenizer learns its merges from)."""
    out = []
    vocabulary = _WORDS.split()
    n = len(vocabulary)
    for i in range(lines):
        words = [vocabulary[(i * 7 + k * 13) % n] for k in range(6 + i % 5)]
        out.append(f"{' '.join(words).capitalize()} {i} and {i * 37 % 1000}.")
        out.append(f"What is the code for item {i}? The code is E{i % 12}.")
    return out


def build_tokenizer(directory: Path, *, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens and chat template, saved to `directory`.

    eos is `<|im_end|>` (generation stops at the end of the assistant turn), pad is `<|pad|>`; no bos is added.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[ENDOFTEXT, IM_START],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_tiny_llama(
    directory: Path,
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int | None = None,
    head_dim: int = 32,
    seed: int = 0,
) -> Path:
    """A randomly initialised LlamaForCausalLM (float32, untied embeddings) saved with `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        head_dim=head_dim,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(directory)  # type: ignore[no-untyped-call]
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_base(root: Path) -> Path:
    """The tests' tiny model: `build_tokenizer` in root/tokenizer, `build_tiny_llama` in root/model (returned)."""
    return build_tiny_llama(root / "model", build_tokenizer(root / "tokenizer"))


def _llama_cpp_permute(weights: Any, n_head: int) -> Any:
    """The q/k row permutation llama.cpp's converter applies (transformers' GGUF loader undoes it)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def build_tiny_gguf(path: Path, model_dir: Path, *, quant: str = "F32") -> Path:
    """Write a Llama checkpoint (e.g. from :func:`build_tiny_llama`) and its tokenizer as a GGUF file.

    `quant` is a GGML type name: F32 (exact round trip), F16 or Q8_0 (norms always stay F32, like llama.cpp).
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    if config["model_type"] != "llama":
        raise ValueError(f"build_tiny_gguf writes llama models only, got {config['model_type']}")
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    chat_template = tok_config.get("chat_template")
    if chat_template is None and (model_dir / "chat_template.jinja").is_file():
        chat_template = (model_dir / "chat_template.jinja").read_text()

    vocab: dict[str, int] = dict(tokenizer_json["model"]["vocab"])
    added = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    vocab.update(added)
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]
    token_types = [gguf.TokenType.CONTROL if t in added else gguf.TokenType.NORMAL for t in tokens]

    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(float((config.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    if config.get("eos_token_id") is not None:
        writer.add_eos_token_id(config["eos_token_id"])
    if config.get("pad_token_id") is not None:
        writer.add_pad_token_id(config["pad_token_id"])
    if chat_template:
        writer.add_chat_template(chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    state = load_file(str(model_dir / "model.safetensors"))
    for hf_name, array in sorted(state.items()):
        base, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(base)
        if gguf_name is None:
            raise ValueError(f"no GGUF name for {hf_name}")
        data = np.ascontiguousarray(array, dtype=np.float32)
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = _llama_cpp_permute(data, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = _llama_cpp_permute(data, n_kv)
        tensor_type = qtype if data.ndim == 2 else gguf.GGMLQuantizationType.F32
        if tensor_type != gguf.GGMLQuantizationType.F32:
            data = gguf.quantize(data, tensor_type)
        writer.add_tensor(f"{gguf_name}.{suffix}", data, raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def populate_hf_cache(cache_dir: Path, repo_id: str, src_dir: Path, revision: str = "main") -> str:
    """Lay out `src_dir`'s files as the hub cache entry of model repo `repo_id` at `revision`; return the commit hash.

    The layout is huggingface_hub's (see `huggingface_hub.file_download` / `_snapshot_download`):
    `models--ORG--NAME/blobs/<etag>` holds the bytes (git sha1 for small files, sha256 for LFS ones),
    `snapshots/<commit>/<path>` are relative symlinks to them, `refs/<revision>` holds the commit hash (when
    `revision` is a branch or tag) and `trees/<commit>.json` is the cached file listing, which lets
    `snapshot_download` pinned to that commit skip the network entirely and tells it the snapshot is complete.
    The commit hash is derived from the content, so the same files give the same commit.
    """
    files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    entries: dict[str, dict[str, Any]] = {}
    digest = hashlib.sha1(repo_id.encode())
    for path in files:
        rel = path.relative_to(src_dir).as_posix()
        data = path.read_bytes()
        git_sha = _git_blob_sha1(data)
        entry: dict[str, Any] = {"size": len(data), "blob_id": git_sha}
        if path.suffix in (".safetensors", ".bin", ".gguf", ".model"):
            entry["lfs_sha256"], entry["lfs_size"] = hashlib.sha256(data).hexdigest(), len(data)
        entries[rel] = entry
        digest.update(rel.encode() + b"\0" + git_sha.encode())
    commit = digest.hexdigest()
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        commit = revision  # pinned commit: lay it out under that very hash

    storage = cache_dir / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = storage / "blobs", storage / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    for path in files:
        rel = path.relative_to(src_dir).as_posix()
        etag = entries[rel].get("lfs_sha256") or entries[rel]["blob_id"]
        blob = blobs / etag
        if not blob.exists():
            shutil.copyfile(path, blob)
        pointer = snapshot / rel
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    if commit != revision:
        ref = storage / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)  # no trailing newline, as huggingface_hub writes it
    trees = storage / "trees"
    trees.mkdir(exist_ok=True)
    (trees / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": entries}, indent=1))
    return commit
