"""Does `generalMixRatio` reduce forgetting? Two runs of the medical demo spec, side by side.

Same spec, seed and data, once with no general data mixed in and once with 10% (the seed's ratio).
Each run scores the base model and its adapter on the general held-out set (arithmetic, capitals,
plurals, opposites: questions not in the general training set), so forgetting shows as the
adapter's general score falling below the base model's.

    python bench/general_mix.py [--spec examples/trainer/medical-smollm2.json] [--ratio 0.1]

Last line: `general_mix base_general=<f> mix0_general=<f> mix_general=<f> mix0_domain=<f> mix_domain=<f>`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def train(spec: dict[str, Any], ratio: float, work: Path) -> dict[str, Any]:
    """Run the trainer with `generalMixRatio=ratio`; return result.json's evaluation."""
    out = work / f"mix-{ratio}"
    run_spec = {**spec, "dataset": {**spec["dataset"], "generalMixRatio": ratio}, "outputDir": str(out)}
    run_spec["evaluation"] = {**spec.get("evaluation", {}), "measureRetention": True}
    path = work / f"spec-{ratio}.json"
    path.write_text(json.dumps(run_spec))
    print(f"training with generalMixRatio={ratio} ...", flush=True)
    proc = subprocess.run([sys.executable, "-m", "loraplane.trainer", "--spec", str(path)], check=False)
    if proc.returncode != 0:
        sys.exit(f"trainer failed with exit code {proc.returncode}")
    evaluation: dict[str, Any] = json.loads((out / "result.json").read_text())["evaluation"]
    return evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "examples/trainer/medical-smollm2.json")
    parser.add_argument("--ratio", type=float, default=0.1)
    ns = parser.parse_args()
    spec = json.loads(ns.spec.read_text())
    with tempfile.TemporaryDirectory(prefix="bench-general-mix-") as tmp:
        without = train(spec, 0.0, Path(tmp))
        with_mix = train(spec, ns.ratio, Path(tmp))
    base = without["general_base_score"]
    print(f"{'run':22} {'general (base ' + format(base, '.3f') + ')':>22} {'domain':>8}")
    for label, ev in (("generalMixRatio=0", without), (f"generalMixRatio={ns.ratio}", with_mix)):
        print(f"{label:22} {ev['general_adapter_score']:>22.3f} {ev['adapter_score']:>8.3f}")
    print(
        f"general_mix base_general={base:.3f} mix0_general={without['general_adapter_score']:.3f} "
        f"mix_general={with_mix['general_adapter_score']:.3f} mix0_domain={without['adapter_score']:.3f} "
        f"mix_domain={with_mix['adapter_score']:.3f}"
    )


if __name__ == "__main__":
    main()
