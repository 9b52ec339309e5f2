"""The README and docs/ cannot rot.

The README opens with its two commands and stays short. In the README and every page of docs/, whatever
names a part of the project must exist: `make` targets, repository paths, relative links (and the headings
they point at), environment variables, metrics, `python -m` modules and their options, `loraplane`
subcommands and their options. The tables that restate a contract must equal it: the settings models,
the trainer's exit codes, the condition types and reasons, the Makefile's targets, the test markers, the
benchmarks. ```python blocks compile, and ```sh blocks run as written against the test cluster with the
operator (```bash blocks are shown, not run).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from tests.support.kube import REPO, Cluster, OperatorProcess

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 100  # "one screen or two"

FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)
PATH = re.compile(
    r"(?<![\w/.~-])((?:examples|manifests|hack|bench|docs|tests|cli|serving|operator|trainer_image)/[\w./-]*)"
)
ENV = re.compile(r"\bLORAPLANE_[A-Z0-9_]*[A-Z0-9]\b")
METRIC = re.compile(r"\bloraplane_[a-z_]+[a-z]\b")
MODULE_COMMAND = re.compile(r"-m (loraplane(?:\.\w+)+)([^\n#|;&]*)")
DOTTED = re.compile(r"loraplane\.(?:api|operator|trainer|serving|cli)(?:\.\w+)*")
CLI_COMMAND = re.compile(r"(?<![\w./-])(?<!get )loraplane ([a-z]+)\b([^\n#|;&`]*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")


def page_id(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def blocks(page: Path, lang: str) -> list[str]:
    return [body for info, body in FENCE.findall(text(page)) if info == lang]


def code(page: Path) -> list[str]:
    """Every fenced block and every inline code span of the page."""
    raw = text(page)
    prose = FENCE.sub("", raw)
    return [body for _, body in FENCE.findall(raw)] + [m.group(2) for m in SPAN.finditer(prose)]


def prose(page: Path) -> str:
    """The page without fenced blocks and code spans (where links and headings live)."""
    return SPAN.sub("", FENCE.sub("", text(page)))


def table_rows(page: Path, header: str) -> list[list[str]]:
    """Rows (cells) of every table of the page whose first header cell is `header`."""
    rows: list[list[str]] = []
    inside = False
    for line in FENCE.sub("", text(page)).splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not inside:
            inside = cells[0] == header
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        rows.append(cells)
    return rows


def ticked(cell: str) -> list[str]:
    return [m.group(2) for m in SPAN.finditer(cell)]


def make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-zA-Z][\w-]*):", makefile, re.MULTILINE))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    plain = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", text(page)))}


@functools.cache
def tracked_sources() -> str:
    """Every file of the clone that is not documentation (tracked, or new and not ignored), concatenated (where names
    must come from)."""
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    parts = []
    for name in names.splitlines():
        path = REPO / name
        if path.suffix in {".md", ".jsonl"} or not path.is_file():
            continue
        try:
            parts.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
    return "\n".join(parts)


def settings_models() -> list[type[BaseSettings]]:
    from loraplane.operator.settings import OperatorSettings
    from loraplane.serving.agent.settings import AgentSettings
    from loraplane.serving.router.settings import RouterSettings

    return [OperatorSettings, RouterSettings, AgentSettings]


def env_names(model: type[BaseSettings]) -> set[str]:
    prefix = str(model.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in model.model_fields}


# ---------------------------------------------------------------------------------------------- README


def test_readme_opens_with_exactly_the_two_commands() -> None:
    _, first_body = FENCE.findall(text(README))[0]
    commands = [line.split("#")[0].strip() for line in first_body.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"], first_body
    assert text(README).startswith("# Loraplane\n\n```"), "the two commands come first"
    assert {"demo", "test"} <= make_targets()
    assert "make test" in (REPO / ".ci/run").read_text(), "CI runs the README's test command"


def test_readme_fits_on_two_screens() -> None:
    lines = len(text(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(REPO / target.split("#")[0]).resolve() for target in LINK.findall(prose(README))}
    missing = [page_id(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"pages in docs/ the README does not link: {missing}"


# ---------------------------------------------------------------------------------------------- every page


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_make_target_and_path_named_exists(page: Path) -> None:
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", text(page)))
    assert named <= make_targets(), f"{page_id(page)}: not in the Makefile: {sorted(named - make_targets())}"
    paths = set(PATH.findall(text(page)))
    missing = sorted(p for p in paths if "*" not in p and "<" not in p and not (REPO / p.rstrip(".")).exists())
    assert not missing, f"{page_id(page)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page_id(page)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_environment_variable_and_metric_named_exists(page: Path) -> None:
    sources = tracked_sources()
    known = set(ENV.findall(sources)).union(*(env_names(m) for m in settings_models()))
    spans = "\n".join(code(page))
    unknown = sorted(set(ENV.findall(spans)) - known)
    assert not unknown, f"{page_id(page)} names environment variables nothing reads: {unknown}"
    metrics = {name for name in METRIC.findall(spans)}
    unknown = sorted(m for m in metrics if f'"{m}"' not in sources and f'"{m.removesuffix("_total")}"' not in sources)
    assert not unknown, f"{page_id(page)} names metrics nothing defines: {unknown}"


def _module_sources(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"no module {module}"
    origin = Path(spec.origin)
    files = origin.parent.rglob("*.py") if spec.submodule_search_locations else [origin]
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_python_module_and_its_options_exist(page: Path) -> None:
    problems = []
    for snippet in code(page):
        for module, rest in MODULE_COMMAND.findall(snippet):
            try:
                sources = _module_sources(module)
            except (AssertionError, ModuleNotFoundError):
                problems.append(f"python -m {module}: no such module")
                continue
            problems += [f"{module} {opt}" for opt in OPTION.findall(rest) if f'"{opt}"' not in sources]
        for name in DOTTED.findall(snippet):
            if not _resolves(name):
                problems.append(f"{name}: no such module or attribute")
    assert not problems, f"{page_id(page)}: {problems}"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        module = ".".join(parts[:cut])
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except ModuleNotFoundError:
            continue
        if cut == len(parts):
            return True
        obj: Any = importlib.import_module(module)
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _cli_options() -> dict[str, set[str]]:
    from loraplane.cli.main import parser

    root = parser()
    common = {opt for action in root._actions for opt in action.option_strings}
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: common | {opt for action in p._actions for opt in action.option_strings}
        for name, p in sub.choices.items()
    }


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_loraplane_command_and_option_exists(page: Path) -> None:
    commands = _cli_options()
    uses: list[tuple[str, list[str]]] = []
    for snippet in code(page):
        for line in snippet.splitlines():
            uses += [(sub, OPTION.findall(rest)) for sub, rest in CLI_COMMAND.findall(line)]
    for row in table_rows(page, "command"):  # | `loraplane run FILE` | `--force` ... |
        found = CLI_COMMAND.findall(" ".join(ticked(row[0])))
        if found:
            uses.append((found[0][0], OPTION.findall(" ".join(ticked(" ".join(row[1:]))))))
    problems = []
    for sub, options in uses:
        if sub not in commands:
            problems.append(f"loraplane {sub}: no such command")
            continue
        problems += [f"loraplane {sub} {opt}" for opt in options if opt not in commands[sub]]
    assert not problems, f"{page_id(page)}: {problems}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_compile(page: Path) -> None:
    for body in blocks(page, "python"):
        compile(body, page_id(page), "exec")


# ---------------------------------------------------------------------------------------------- contracts


@pytest.mark.parametrize(
    ("page", "model"),
    [("operator.md", "OperatorSettings"), ("router.md", "RouterSettings"), ("adapter-agent.md", "AgentSettings")],
)
def test_settings_table_matches_the_settings_model(page: str, model: str) -> None:
    """Every setting is documented with its default, and nothing else is."""
    cls = next(m for m in settings_models() if m.__name__ == model)
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    rows = {ticked(r[0])[0]: r[1] for r in table_rows(DOCS / page, "variable") if ticked(r[0])}
    assert set(rows) == env_names(cls), (
        f"docs/{page}: missing {sorted(env_names(cls) - set(rows))}, extra {sorted(set(rows) - env_names(cls))}"
    )
    wrong = []
    for name, field in cls.model_fields.items():
        expected = _shown_default(field)
        cell = rows[f"{prefix}{name.upper()}"]
        shown = ticked(cell)[0] if ticked(cell) else cell.split()[0] if cell else ""
        if expected is not None and shown != expected:
            wrong.append(f"{prefix}{name.upper()}: documented {shown!r}, default {expected!r}")
    assert not wrong, f"docs/{page}: {wrong}"


def _shown_default(field: Any) -> str | None:
    """How a default is written in the docs; None where it is not a constant (e.g. a random priority)."""
    if field.default_factory is not None:
        value = field.default_factory()
        return "empty" if value in ([], {}) else None
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_exit_code_table_matches_the_contract() -> None:
    from loraplane.api.conditions import exit_reason
    from loraplane.api.exit_codes import PERMANENT, ExitCode

    rows = table_rows(DOCS / "trainer.md", "code")
    documented = {int(r[0]): r for r in rows}
    assert set(documented) == {int(c) for c in ExitCode}, "docs/trainer.md: exit codes differ from ExitCode"
    wrong = []
    for code, row in documented.items():
        if ticked(row[1]) != [exit_reason(code)]:
            wrong.append(f"{code}: reason {row[1]}, contract {exit_reason(code)}")
        if (row[3] == "fails at once") != (code in PERMANENT):
            wrong.append(f"{code}: '{row[3]}' but the podFailurePolicy {'fails' if code in PERMANENT else 'retries'}")
    assert not wrong, f"docs/trainer.md: {wrong}"


def test_conditions_and_reasons_match_the_api() -> None:
    from typing import get_args

    from loraplane.api import conditions
    from loraplane.api.finetunejob import Phase

    def constants(cls: type) -> set[str]:
        return {v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}

    page = DOCS / "operator.md"
    types = {word for row in table_rows(page, "type") for word in ticked(row[0])}
    assert types == constants(conditions.ConditionType), f"docs/operator.md: condition types {sorted(types)}"
    reasons = {word for row in table_rows(page, "reason") for word in ticked(row[0])}
    known = set().union(
        *(constants(c) for c in (conditions.JobReason, conditions.ServerReason, conditions.SourceReason))
    )
    assert not known - reasons, f"docs/operator.md does not explain {sorted(known - reasons)}"
    extra = reasons - known - set(get_args(Phase))  # Running=True carries the phase as its reason
    assert not extra, f"docs/operator.md explains reasons that do not exist: {sorted(extra)}"


def test_development_page_lists_every_target_and_marker() -> None:
    page = DOCS / "development.md"
    targets = {m for row in table_rows(page, "target") for m in re.findall(r"make ([\w-]+)", row[0])}
    wanted = make_targets() - {"help"}  # `make help` is named in the text
    assert targets == wanted, (
        f"docs/development.md: missing {sorted(wanted - targets)}, extra {sorted(targets - wanted)}"
    )
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    markers = {m.split(":")[0].strip() for m in config["tool"]["pytest"]["ini_options"]["markers"]}
    documented = {ticked(row[0])[0] for row in table_rows(page, "marker")}
    assert documented == markers, f"docs/development.md: markers {sorted(documented)}, pyproject {sorted(markers)}"


def test_every_benchmark_is_in_the_benchmarks_page() -> None:
    page = text(DOCS / "benchmarks.md")
    missing = [b.relative_to(REPO).as_posix() for b in sorted((REPO / "bench").glob("*.py"))]
    missing = [b for b in missing if f"`{b}" not in page]
    assert not missing, f"docs/benchmarks.md does not describe {missing}"


# ---------------------------------------------------------------------------------------------- runnable


def test_runnable_shell_blocks_run_as_written(operator: OperatorProcess, installed: Cluster, tmp_path: Path) -> None:
    """Each ```sh block of the README and docs/ runs in bash -e from the repository root, with kubectl
    pointing at the test cluster."""
    runnable = [(page, body) for page in PAGES for body in blocks(page, "sh")]
    assert any(page == README for page, _ in runnable), "the README marks the blocks that run here with ```sh"
    env = {
        **installed.env,
        "KUBECONFIG": str(installed.kubeconfig),
        "PATH": f"{installed.bin_dir}:{REPO / '.venv/bin'}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(tmp_path)),
    }
    try:
        for page, body in runnable:
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", body],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, (
                f"{page_id(page)}: block failed:\n{body}\n--- output\n{proc.stdout}{proc.stderr}"
            )
    finally:
        installed.kubectl("delete", "-f", str(REPO / "examples"), "--ignore-not-found", "--wait=false", check=False)
