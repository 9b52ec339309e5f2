"""What a run produced, for people: a score table (base vs adapter, general retention) and a PNG."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from loraplane.cli.store import StoredAdapter


def _score(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def score_table(adapters: list[StoredAdapter]) -> Table:
    """One row per adapter: held-out metric for base and adapter, the gate, general-ability retention."""
    table = Table(title="Held-out evaluation: base model vs adapter", title_justify="left")
    columns = ("adapter", "metric", "base", "adapter score", "gate", "held-out loss", "general base", "general adapter")
    for column in (*columns, "trained"):
        table.add_column(column, justify="left" if column in ("adapter", "metric", "gate") else "right")
    for adapter in adapters:
        ev = adapter.evaluation
        metrics = adapter.result.metrics if adapter.result else {}
        durations = adapter.result.durations if adapter.result else {}
        gate = "-" if ev is None else ("[green]passed[/]" if ev.passed else "[red]failed[/]")
        trained = (
            f"{metrics.get('global_step', '?')} steps, {durations.get('train_seconds', 0) / 60:.1f} min"
            if metrics
            else "-"
        )
        if ev is None:
            table.add_row(adapter.name, "-", "-", "-", gate, "-", "-", "-", trained)
            continue
        table.add_row(
            adapter.name,
            ev.metric,
            _score(ev.base_score),
            _score(ev.adapter_score),
            gate,
            f"{_score(ev.base_loss)} → {_score(ev.adapter_loss)}" if ev.base_loss is not None else "-",
            _score(ev.general_base_score),
            _score(ev.general_adapter_score),
            trained,
        )
    return table


def write_png(adapters: list[StoredAdapter], path: Path) -> Path:
    """Loss curves (left) and held-out scores before/after, domain and general (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for adapter in adapters:
        history = [r for r in (adapter.result.loss_history if adapter.result else []) if r.loss is not None]
        if history:
            loss_ax.plot([r.step for r in history], [r.loss for r in history], label=adapter.name)
    loss_ax.set(title="Training loss (answer tokens)", xlabel="step", ylabel="loss")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend()

    labels: list[str] = []
    before: list[float] = []
    after: list[float] = []
    for adapter in adapters:
        ev = adapter.evaluation
        if ev is None:
            continue
        labels.append(f"{adapter.name}\n{ev.metric}")
        before.append(ev.base_score)
        after.append(ev.adapter_score)
        if ev.general_base_score is not None and ev.general_adapter_score is not None:
            labels.append(f"{adapter.name}\ngeneral retention")
            before.append(ev.general_base_score)
            after.append(ev.general_adapter_score)
    xs = range(len(labels))
    width = 0.38
    bars_before = score_ax.bar([x - width / 2 for x in xs], before, width, label="base model", color="#9e9e9e")
    bars_after = score_ax.bar([x + width / 2 for x in xs], after, width, label="with adapter", color="#1f77b4")
    score_ax.bar_label(bars_before, fmt="%.2f", fontsize=8)
    score_ax.bar_label(bars_after, fmt="%.2f", fontsize=8)
    score_ax.set_xticks(list(xs), labels, fontsize=8)
    score_ax.set(title="Held-out score before / after", ylabel="score", ylim=(0, 1.1))
    score_ax.legend(loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
