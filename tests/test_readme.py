"""The README cannot rot: its two commands exist, every `make` target and repository path it names exists,
and its runnable shell blocks (fenced as ```sh) run as written against the test cluster with the operator."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.kube_harness import REPO, Cluster, OperatorProcess

README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(lang: str) -> list[str]:
    return [body for info, body in FENCE.findall(README) if info == lang]


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-zA-Z][\w-]*):", text, re.MULTILINE))


def test_readme_opens_with_exactly_the_two_commands() -> None:
    _, first_body = FENCE.findall(README)[0]
    commands = [line.split("#")[0].strip() for line in first_body.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"], first_body
    assert {"demo", "test"} <= make_targets()
    assert "make test" in (REPO / ".ci/run").read_text(), "CI runs the README's test command"


def test_every_make_target_and_path_the_readme_names_exists() -> None:
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README))
    assert named and named <= make_targets(), f"not in the Makefile: {sorted(named - make_targets())}"
    paths = set(
        re.findall(
            r"(?<![\w/.~-])((?:examples|manifests|hack|bench|docs|tests|cli|serving|operator|trainer_image)/[\w./-]*)",
            README,
        )
    )
    missing = sorted(p for p in paths if "*" not in p and "<" not in p and not (REPO / p.rstrip(".")).exists())
    assert not missing, f"the README names paths that do not exist: {missing}"


@pytest.mark.cluster
def test_runnable_shell_blocks_run_as_written(operator: OperatorProcess, installed: Cluster, tmp_path: Path) -> None:
    """Each ```sh block runs in bash -e from the repository root, with kubectl pointing at the test cluster."""
    runnable = blocks("sh")
    assert runnable, "the README marks the blocks that run here with ```sh"
    env = {
        **installed.env,
        "KUBECONFIG": str(installed.kubeconfig),
        "PATH": f"{installed.bin_dir}:{REPO / '.venv/bin'}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(tmp_path)),
    }
    try:
        for body in runnable:
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", body],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, f"README block failed:\n{body}\n--- output\n{proc.stdout}{proc.stderr}"
    finally:
        installed.kubectl("delete", "-f", str(REPO / "examples"), "--ignore-not-found", "--wait=false", check=False)
