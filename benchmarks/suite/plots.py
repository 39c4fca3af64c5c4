"""PNG plots of the results (matplotlib, the `bench` extra). Without matplotlib the benchmark still writes
every table and says which plots it skipped."""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_bars(latency: dict[str, dict], out: Path) -> Path:
    """Median per-window latency of every measured configuration, one bar per thread setting, with the
    repeats' min-max as error bars (log scale: PyTorch and the edge runtimes differ by 10x or more)."""
    plt = _pyplot()
    settings = list(latency)
    labels = [k for k in latency[settings[0]]["spread"]]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.5))
    y = np.arange(len(labels))
    h = 0.8 / len(settings)
    for j, setting in enumerate(settings):
        sp = latency[setting]["spread"]
        med = np.array([sp[k]["median_us"] if k in sp else np.nan for k in labels])
        lo = med - np.array([sp[k]["min_us"] if k in sp else np.nan for k in labels])
        hi = np.array([sp[k]["max_us"] if k in sp else np.nan for k in labels]) - med
        ax.barh(y + j * h, med, h, xerr=[lo, hi], label=f"threads: {setting}")
    ax.set_yticks(y + h * (len(settings) - 1) / 2, labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}" if str(int(v))[0] in "25" else ""))
    ax.set_xlabel("median time of the model per window, batch 1 (us, log scale)")
    ax.legend()
    ax.set_title("Per-window latency, streaming (window by window, as in a live loop), all sensors present")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def skip_curve(skip: dict[str, dict], out: Path) -> Path:
    """Median latency against the number of sensors present (each subset a point, the line through the
    means per count), beside what exact proportionality to the encoders run would give."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, table in skip.items():
        counts = np.array([k.count("+") + 1 for k in table])
        med = np.array([v["median_us"] for v in table.values()])
        n = np.arange(1, counts.max() + 1)
        means = np.array([med[counts == c].mean() for c in n])
        line, = ax.plot(n, means, marker="o", label=label)
        ax.scatter(counts, med, s=12, color=line.get_color(), alpha=0.5)
        ax.plot(n, means[-1] * n / n[-1], ls=":", color=line.get_color(), alpha=0.7)
    ax.set_xticks(range(1, max(k.count("+") + 1 for t in skip.values() for k in t) + 1))
    ax.set_xlabel("sensors present (encoders run)")
    ax.set_ylabel("median per-window latency (us)")
    ax.set_title("Encoder skipping (dotted: proportional to encoders run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def accuracy_runs(root: Path) -> dict[tuple[str, str], list[dict]]:
    """The accuracy benchmark's per-split results (benchmarks/results/accuracy/raw), by data set and protocol."""
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(root.glob("raw/*/*.json")):
        r = json.loads(path.read_text())
        plan = r["plan"]
        key = (plan["protocol"] + ("@" + "+".join(plan["modalities"]) if plan.get("modalities") else "")
               + ("+adapted" if plan.get("normalization") == "session" else ""))  # as benchmarks.accuracy.Plan.key
        runs[(plan["dataset"], key)].append(r)
    return dict(runs)


def _methods(runs: list[dict], budgets: list[str]) -> list[str]:
    """Methods in the order the accuracy benchmark lists them, across the given budgets."""
    out: list[str] = []
    for b in budgets:
        out += [m for m, v in runs[0]["budgets"][b].items() if isinstance(v, dict) and "test" in v and m not in out]
    return out


def accuracy_curve(key: tuple[str, str], runs: list[dict], out: Path) -> Path:
    """Test macro-F1 (all sensors) against the labelled budget, mean and std over splits, per method."""
    plt = _pyplot()
    budgets = list(runs[0]["budgets"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(budgets))
    for m in _methods(runs, budgets):
        vals = [[next(iter(r["budgets"][b][m]["test"].values())) for r in runs] if m in runs[0]["budgets"][b] else None
                for b in budgets]
        xs = [i for i, v in enumerate(vals) if v is not None]
        ax.errorbar(x[xs], [np.mean(vals[i]) for i in xs], yerr=[np.std(vals[i], ddof=1) if len(vals[i]) > 1 else 0 for i in xs],
                    marker="o", capsize=3, label=m)
    ax.set_xticks(x, [f"{b}\n({runs[0]['budgets'][b]['labelled_windows']} labels)" for b in budgets])
    ax.set_ylabel("test macro-F1 (mean ± std over splits)")
    ax.set_title(f"{key[0]}, protocol {key[1]}: {len(runs)} splits, all sensors present")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def missing_heatmap(key: tuple[str, str], runs: list[dict], out: Path) -> Path:
    """Test macro-F1 (mean over splits) per subset of sensors present and method, at the middle budget."""
    plt = _pyplot()
    budgets = list(runs[0]["budgets"])
    b = budgets[len(budgets) // 2]
    methods = _methods(runs, [b])
    subsets = list(runs[0]["budgets"][b][methods[0]]["test"])
    grid = np.array([[np.mean([r["budgets"][b][m]["test"][s] for r in runs]) for m in methods] for s in subsets])
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 3, 0.35 * len(subsets) + 2))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_yticks(range(len(subsets)), subsets)
    for i in range(len(subsets)):
        for j in range(len(methods)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if grid[i, j] < grid.mean() else "black")
    fig.colorbar(im, ax=ax, label="test macro-F1")
    ax.set_title(f"{key[0]}, {key[1]}: sensors present at test time ({b} labels)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
