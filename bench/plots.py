"""PNG plots of the bench figures, written next to their JSON (called by bench/run.py).

goals.png: each figure that states a goal ("<= 1.1") over the recorded runs in
bench/results/, one panel per figure, the goal as a dashed line.
latency.png: the latest run's latency figures that carry percentiles (p50/p95/p99),
one bar group per figure.

Usage: python bench/plots.py [RESULTS_DIR]   (default bench/results)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
GOAL = re.compile(r"^\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*$")


def load_runs(results: Path) -> list[tuple[str, dict[str, Any]]]:
    """The recorded runs, oldest first, as (name, figures); latest.json is a copy."""
    runs = []
    for path in sorted(results.glob("*.json")):
        if path.name == "latest.json":
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        # A figure is a dict (value, goal, parts); a provider's bare numbers (the models
        # provider's parts, e.g. model_pull_bytes) have no goal or latencies to plot.
        figures = {n: f for n, f in report.get("figures", {}).items() if isinstance(f, dict)}
        runs.append((path.stem, figures))
    return runs


def goal_of(figure: dict[str, Any]) -> tuple[str, float] | None:
    match = GOAL.match(str(figure.get("goal", "")))
    return (match.group(1), float(match.group(2))) if match else None


def percentile_parts(figure: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The figure's p50/p95/p99 sets, by the key that holds them."""
    return {
        key: value
        for key, value in figure.items()
        if isinstance(value, dict) and all(p in value for p in ("p50", "p95", "p99"))
    }


def plot_goals(runs: list[tuple[str, dict[str, Any]]], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    names = sorted({n for _, figs in runs for n, f in figs.items() if goal_of(f)})
    if not names:
        return None
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        xs, ys = [], []
        for i, (_, figs) in enumerate(runs):
            if name in figs and isinstance(figs[name].get("value"), int | float):
                xs.append(i)
                ys.append(figs[name]["value"])
        op, bound = next(goal_of(figs[name]) for _, figs in reversed(runs) if name in figs)
        met = [eval_goal(op, bound, y) for y in ys]
        ax.plot(xs, ys, color="#2f6fdb", zorder=1)
        ax.scatter(xs, ys, c=["#1b7f3b" if m else "#b3261e" for m in met], zorder=2)
        ax.axhline(bound, color="#6b7480", linestyle="--", label=f"goal {op} {bound:g}")
        unit = next(figs[name].get("unit", "") for _, figs in reversed(runs) if name in figs)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(unit)
        ax.set_xticks(range(len(runs)), [r[:15] for r, _ in runs], rotation=30, fontsize=7)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = out / "goals.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def eval_goal(op: str, bound: float, value: float) -> bool:
    return {"<=": value <= bound, ">=": value >= bound, "<": value < bound, ">": value > bound}[op]


def plot_latencies(figures: dict[str, Any], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    groups = [
        (f"{name}\n{key}", parts)
        for name, figure in sorted(figures.items())
        if isinstance(figure, dict)
        for key, parts in sorted(percentile_parts(figure).items())
    ]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    width = 0.27
    for j, (p, color) in enumerate((("p50", "#2f6fdb"), ("p95", "#d08a00"), ("p99", "#b3261e"))):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        ax.bar(xs, [parts[p] for _, parts in groups], width, label=p, color=color)
    ax.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ms or s, as the key names (log scale)")
    ax.set_title("Latency distributions, latest run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(results: Path = RESULTS) -> list[Path]:
    """Writes the plots into results and returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    runs = load_runs(results)
    if not runs:
        return []
    written = [plot_goals(runs, results), plot_latencies(runs[-1][1], results)]
    return [p for p in written if p]


if __name__ == "__main__":
    for p in plot(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS):
        print(p)
