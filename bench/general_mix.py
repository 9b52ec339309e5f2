"""Does `generalMixRatio` reduce forgetting? Two runs of the medical demo job, side by side.

Same spec, seed and data, once with no general data mixed in and once with 10% (the seed's ratio).
Each run scores the base model and its adapter on the general held-out set (arithmetic, capitals,
plurals, opposites: questions not in the general training set), so forgetting shows as the
adapter's general score falling below the base model's.

    python bench/general_mix.py [--job examples/local/medical.yaml] [--ratio 0.1]

Last line: `general_mix base_general=<f> mix0_general=<f> mix_general=<f> mix0_domain=<f> mix_domain=<f>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.support.bench`: the trainer as a child, the table

from loraplane.serving import proctree  # noqa: E402
from tests.support.bench import Column, run_trainer, table  # noqa: E402


def training_spec(job: Path, work: Path) -> dict[str, Any]:
    """The FineTuneJob rendered as local mode renders it (the same TrainerSpec the operator writes)."""
    from loraplane.cli.manifest import load_finetunejob
    from loraplane.cli.run import local_trainer_spec
    from loraplane.cli.store import AdapterStore, default_cache

    name, spec = load_finetunejob(job)
    rendered = local_trainer_spec(name, spec, store=AdapterStore(work), cache=default_cache(), pvc_root=Path.cwd())
    result: dict[str, Any] = json.loads(rendered.model_dump_json(by_alias=True, exclude_none=True))
    return result


def train(spec: dict[str, Any], ratio: float, work: Path) -> dict[str, Any]:
    """Run the trainer with `generalMixRatio=ratio`; return result.json's evaluation."""
    out = work / f"mix-{ratio}"
    run_spec = {**spec, "dataset": {**spec["dataset"], "generalMixRatio": ratio}, "outputDir": str(out)}
    run_spec["evaluation"] = {**spec.get("evaluation", {}), "measureRetention": True}
    path = work / f"spec-{ratio}.json"
    path.write_text(json.dumps(run_spec))
    print(f"training with generalMixRatio={ratio} ...", flush=True)
    proc = run_trainer(path)
    if proc.returncode != 0:
        sys.exit(f"trainer failed with exit code {proc.returncode}")
    evaluation: dict[str, Any] = json.loads((out / "result.json").read_text())["evaluation"]
    return evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=REPO / "examples/local/medical.yaml", help="FineTuneJob YAML")
    parser.add_argument("--ratio", type=float, default=0.1)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-general-mix-") as tmp:
        spec = training_spec(ns.job, Path(tmp))
        without = train(spec, 0.0, Path(tmp))
        with_mix = train(spec, ns.ratio, Path(tmp))
    base = without["general_base_score"]
    columns = [Column("run", 22), Column(f"general (base {base:.3f})", 22, ".3f"), Column("domain", 8, ".3f")]
    runs = (("generalMixRatio=0", without), (f"generalMixRatio={ns.ratio}", with_mix))
    print(table(columns, [(label, ev["general_adapter_score"], ev["adapter_score"]) for label, ev in runs]))
    print(
        f"general_mix base_general={base:.3f} mix0_general={without['general_adapter_score']:.3f} "
        f"mix_general={with_mix['general_adapter_score']:.3f} mix0_domain={without['adapter_score']:.3f} "
        f"mix_domain={with_mix['adapter_score']:.3f}"
    )


if __name__ == "__main__":
    sys.exit(proctree.entry_point(main))  # SIGTERM, SIGHUP: the trainer checkpoints and stops, then we exit
