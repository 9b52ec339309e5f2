"""`loraplane demo`: the whole story on one machine.

Trains every FineTuneJob in a directory (default `examples/local/`: medical and finance on the packaged
SmolLM2-135M-Instruct), prints base vs adapter scores and general-ability retention, writes a PNG with
the loss curves and the before/after scores, then serves the base model and every adapter behind the
router and asks each one a held-out question.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from loraplane.cli.chat import ask
from loraplane.cli.manifest import read_documents
from loraplane.cli.report import score_table, write_png
from loraplane.cli.run import run_job
from loraplane.cli.serve import LocalServer, plan_from_store
from loraplane.cli.store import AdapterStore

REPORT_PNG = "demo-report.png"


def is_finetunejob(path: Path) -> bool:
    return any(doc.get("kind") == "FineTuneJob" for doc in read_documents(path))


def run_demo(examples: Path, *, store: AdapterStore, cache: Path, port: int, console: Console) -> int:
    t0 = time.monotonic()
    files = [p for p in sorted(examples.glob("*.yaml")) if is_finetunejob(p)]
    if not files:
        console.print(f"[red]no FineTuneJob YAML in {examples}[/]")
        return 2
    names = []
    for number, path in enumerate(files, 1):
        console.rule(f"[{number}/{len(files)}] loraplane run {path}")
        outcome = run_job(path, store=store, cache=cache, pvc_root=Path.cwd(), console=console)
        if outcome.code != 0:
            return outcome.code
        names.append(outcome.name)
    trained_at = time.monotonic()

    adapters = [store.get(name) for name in names]
    console.rule("Evaluation")
    console.print(score_table(adapters))
    png = write_png(adapters, store.root / REPORT_PNG)
    console.print(f"loss curves and before/after scores: [bold]{png}[/]")

    console.rule("Serving: vLLM (CPU) + router, one OpenAI-compatible endpoint")
    plan = plan_from_store(store, names)
    with LocalServer(plan, port=port, log_dir=store.serve_logs(), console=console) as server:
        console.print(f"endpoint {server.url}; models: {plan.base_name}, {', '.join(names)}")
        answers = Table(title="One held-out question to each model, through the router", title_justify="left")
        for column in ("model", "question", "expected", "answer"):
            answers.add_column(column, overflow="fold")
        for adapter in adapters:
            samples = adapter.evaluation.samples if adapter.evaluation else []
            if not samples:
                continue
            question, expected = samples[0].prompt, samples[0].answer
            for model in (adapter.name, plan.base_name):
                answers.add_row(model, question, expected, ask(server.url, model, question, max_tokens=64))
        console.print(answers)
    console.rule("Done")
    console.print(
        f"trained and evaluated in {(trained_at - t0) / 60:.1f} min, served and asked in "
        f"{(time.monotonic() - trained_at) / 60:.1f} min; adapters in {store.root}\n"
        f'next: `loraplane serve` then `loraplane chat {names[0]} "..."`, or `loraplane list`'
    )
    return 0
