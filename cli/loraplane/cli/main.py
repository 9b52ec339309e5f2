"""The `loraplane` command: local mode (no cluster). `loraplane --help` lists the subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from loraplane.cli.chat import DEFAULT_URL, ask
from loraplane.cli.errors import ChatError, ServeError
from loraplane.cli.manifest import ManifestError, load_modelserver
from loraplane.cli.store import AdapterStore, UnknownAdapter, default_cache, default_store
from loraplane.serving import proctree

# Usage errors (bad YAML, unknown adapter): distinct from the trainer's exit codes (10-18).
USAGE_ERROR = 2


def _store(ns: argparse.Namespace) -> AdapterStore:
    return AdapterStore(Path(ns.store).expanduser())


def cmd_run(ns: argparse.Namespace, console: Console) -> int:
    from loraplane.cli.run import run_job

    outcome = run_job(
        ns.file, store=_store(ns), cache=default_cache(), pvc_root=ns.pvc_root, console=console, force=ns.force
    )
    if outcome.code == 0:
        entry = _store(ns).get(outcome.name)
        from loraplane.cli.report import score_table

        console.print(score_table([entry]))
        console.print(f"adapter {entry.path} sha256 {entry.sha256[:12]}; serve it with `loraplane serve`")
    return outcome.code


def cmd_serve(ns: argparse.Namespace, console: Console) -> int:
    import threading

    from loraplane.cli.serve import LocalServer, plan_from_modelserver, plan_from_store

    store = _store(ns)
    if ns.file:
        _, spec = load_modelserver(ns.file)
        plan = plan_from_modelserver(spec, store)
    else:
        plan = plan_from_store(store, ns.adapters.split(",") if ns.adapters else None)
    with LocalServer(plan, port=ns.port, host=ns.host, log_dir=store.serve_logs(), console=console) as server:
        table = Table(title=f"Serving on {server.url} (Ctrl-C stops)", title_justify="left")
        for column in ("model", "versions (vLLM name: weight)"):
            table.add_column(column)
        table.add_row(plan.base_name, "base model")
        for model in plan.models:
            table.add_row(model.name, ", ".join(f"{v.name}: {v.weight}%" for v in model.versions))
        console.print(table)
        console.print(
            f'try: loraplane chat {plan.models[0].name} "your question"  (or any OpenAI client at {server.url})'
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (a second one forces: proctree.handle_stop_signals)
            console.print("stopping: draining the answers in flight")
    if server.vllm_exit_code != 0:
        console.print(
            f"[yellow]vLLM did not stop cleanly (exit code {server.vllm_exit_code}); log {server.vllm.log_path}"
        )
        return 1
    return 0


def cmd_chat(ns: argparse.Namespace, console: Console) -> int:
    console.print(ask(ns.url, ns.model, ns.question, max_tokens=ns.max_tokens, api_key=ns.api_key))
    return 0


def cmd_list(ns: argparse.Namespace, console: Console) -> int:
    store = _store(ns)
    entries = store.entries()
    table = Table(title=f"Adapters in {store.root}", title_justify="left")
    for column in ("name", "state", "base model", "metric", "base → adapter", "gate", "sha256"):
        table.add_column(column)
    for entry in entries:
        ev = entry.evaluation
        state = "ready" if entry.ready else ("resumable" if (entry.path / "checkpoints").is_dir() else "incomplete")
        scores = f"{ev.base_score:.3f} → {ev.adapter_score:.3f}" if ev else "-"
        gate = "-" if ev is None else ("passed" if ev.passed else "failed")
        metric = ev.metric if ev else "-"
        table.add_row(entry.name, state, entry.base_model_uri, metric, scores, gate, entry.sha256[:12])
    console.print(table if entries else f"no adapters in {store.root}; train one with `loraplane run FILE.yaml`")
    return 0


def cmd_eval(ns: argparse.Namespace, console: Console) -> int:
    from loraplane.api.trainer_spec import TrainerSpec
    from loraplane.cli.run import SPEC_FILE
    from loraplane.trainer.rescore import rescore

    entry = _store(ns).get(ns.name)
    spec = TrainerSpec.model_validate_json((_store(ns).run_dir(ns.name) / SPEC_FILE).read_text(encoding="utf-8"))
    evaluation = spec.evaluation.model_copy(
        update={
            k: v
            for k, v in {"held_out_uri": ns.held_out, "metric": ns.metric, "max_samples": ns.max_samples}.items()
            if v is not None
        }
    )
    spec = spec.model_copy(update={"evaluation": evaluation})
    with console.status(f"scoring base model and {ns.name} on {evaluation.held_out_uri or 'the validation split'}"):
        report = rescore(spec, entry.path)
    if report is None:
        console.print("[red]the held-out set is empty[/]")
        return USAGE_ERROR
    table = Table(title=f"{ns.name}: {report.metric} on {report.examples} held-out examples", title_justify="left")
    for column in ("", "score"):
        table.add_column(column)
    table.add_row("base model", f"{report.base_score:.3f}")
    table.add_row("adapter", f"{report.adapter_score:.3f}")
    if report.general_base_score is not None and report.general_adapter_score is not None:
        table.add_row("general, base", f"{report.general_base_score:.3f}")
        table.add_row("general, adapter", f"{report.general_adapter_score:.3f}")
    table.add_row("gate", "passed" if report.passed else "failed")
    console.print(table)
    if ns.json:
        sys.stdout.write(json.dumps(report.dump(), ensure_ascii=False) + "\n")
    return 0


def cmd_report(ns: argparse.Namespace, console: Console) -> int:
    from loraplane.cli.report import score_table, write_png

    store = _store(ns)
    adapters = [store.get(n) for n in ns.names] if ns.names else store.ready()
    console.print(score_table(adapters))
    console.print(f"picture: {write_png(adapters, ns.png or store.root / 'report.png')}")
    return 0


def cmd_demo(ns: argparse.Namespace, console: Console) -> int:
    from loraplane.cli.demo import run_demo

    return run_demo(ns.examples, store=_store(ns), cache=default_cache(), port=ns.port, console=console)


def default_examples() -> Path:
    """examples/local/ of the checkout this package runs from."""
    return Path(__file__).resolve().parents[3] / "examples" / "local"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="loraplane", description="Loraplane local mode: train, evaluate and serve LoRA adapters on this machine."
    )
    root.add_argument("--store", default=str(default_store()), help="adapter store directory (env LORAPLANE_STORE)")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train a FineTuneJob YAML here (resumes if interrupted)")
    p.add_argument("file", type=Path, help="FineTuneJob YAML, the same that works on a cluster")
    p.add_argument(
        "--pvc-root", type=Path, default=Path.cwd(), help="pvc://CLAIM/PATH is read from PVC_ROOT/CLAIM/PATH"
    )
    p.add_argument("--force", action="store_true", help="train again even if the adapter is up to date")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="serve the store's adapters (or a ModelServer YAML) on localhost")
    p.add_argument("file", type=Path, nargs="?", help="optional ModelServer YAML (fineTuneJob/file:// sources)")
    p.add_argument("--adapters", help="comma-separated adapter names (default: every ready adapter)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("chat", help="ask a served model one question")
    p.add_argument("model", help="adapter name or base model name (see `loraplane serve`)")
    p.add_argument("question")
    p.add_argument("--url", default=os.environ.get("LORAPLANE_URL", DEFAULT_URL))
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "local"))
    p.add_argument("--max-tokens", type=int, default=128)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("list", help="adapters in the store, with their scores")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("eval", help="score base model vs adapter on a held-out set")
    p.add_argument("name")
    p.add_argument("--held-out", help="held-out data URI (default: the one the adapter was trained with)")
    p.add_argument("--metric", choices=["ExactMatch", "Contains", "RougeL"])
    p.add_argument("--max-samples", type=int)
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="score table and PNG for adapters in the store")
    p.add_argument("names", nargs="*")
    p.add_argument("--png", type=Path)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="train the demo adapters, compare with the base model, serve them, ask each")
    p.add_argument("--examples", type=Path, default=default_examples(), help="directory of FineTuneJob YAMLs")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_demo)
    return root


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    console = Console(stderr=False, highlight=False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM and SIGHUP stop a command as Ctrl-C does (children drained, then killed whole); a second forces it
    proctree.handle_stop_signals()
    try:
        return int(ns.func(ns, console))
    except (ManifestError, UnknownAdapter, ChatError, ServeError) as exc:
        console.print(f"[red]error:[/] {exc}", markup=True)
        return USAGE_ERROR
    except KeyboardInterrupt as exc:
        console.print("interrupted")
        return proctree.exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
