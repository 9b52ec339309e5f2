"""The trainer image's programs as processes: the trainer (`python -m loraplane.trainer`), as the training Job's
container runs it, and the model fetch (`python -m loraplane.trainer.fetch`), as the vLLM pods' init container runs
it. Both load torch and transformers.

Tests get them from the `trainer` fixture (tests/trainer/conftest.py), which marks them `trainer`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from loraplane.api.trainer_spec import FetchEnv
from tests.support.kube import REPO

TRAINER = [sys.executable, "-m", "loraplane.trainer"]


class Trainer:
    def run(self, spec: Path, *extra: str, procs: int = 1) -> subprocess.CompletedProcess[str]:
        """Run to the end (under torchrun with `procs` > 1), with a termination log next to the spec."""
        launcher = [sys.executable, "-m"] + (
            ["torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m"] if procs > 1 else []
        )
        return subprocess.run(
            [
                *launcher,
                "loraplane.trainer",
                "--spec",
                str(spec),
                "--termination-log",
                str(spec.with_suffix(".term")),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )

    def start(self, spec: Path, **popen: Any) -> subprocess.Popen[str]:
        """Start it without waiting (text mode, in the repository); `popen`: subprocess.Popen's keywords."""
        return subprocess.Popen([*TRAINER, "--spec", str(spec)], text=True, cwd=REPO, **popen)

    def fetch(self, uri: str, cache: Path, pvc_root: Path) -> subprocess.CompletedProcess[str]:
        """The init container's command with the environment the operator gives it, to the end."""
        env = {
            **os.environ,
            FetchEnv.BASE_MODEL: json.dumps({"uri": uri}),
            FetchEnv.CACHE_DIR: str(cache),
            FetchEnv.PVC_ROOT: str(pvc_root),
        }
        command = [sys.executable, "-m", "loraplane.trainer.fetch"]  # the init container's command (builders)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
