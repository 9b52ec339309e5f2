"""Demo data shipped with Loraplane (``builtin://NAME`` dataset URIs).

Three sets, each with a ``train.jsonl`` and a ``heldout.jsonl`` (Alpaca records plus a short scorable
``answer``), written by ``hack/generate_demo_data.py`` (not part of the package):

- ``medical``: ICD-10 codes, referral departments, drug classes (English, template ``medical-en``);
- ``finance``: headline sentiment, GICS sectors, ratio formulas (English, three-part answers of the
  template ``finance-analyst-en``);
- ``general``: simple general-knowledge questions, mixed in against forgetting (``generalMixRatio``)
  and used to measure general-ability retention.

The files live inside the package, so they ship with it.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
BUILTIN_DATASETS: tuple[str, ...] = ("medical", "finance", "general")
SPLITS: tuple[str, ...] = ("train", "heldout")


def builtin_dataset_path(name: str, split: str = "train") -> Path:
    """The JSONL file of built-in data set `name` (medical, finance, general), split train or heldout."""
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in dataset {name!r}; known datasets: {', '.join(BUILTIN_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of built-in dataset {name!r}; known splits: {', '.join(SPLITS)}")
    return DATA_DIR / name / f"{split}.jsonl"
