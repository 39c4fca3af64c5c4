"""Accuracy benchmark: macro-F1 on held-out data, supervised vs CroSSL probe vs CroSSL fine-tuned, at several
label budgets and with sensors missing, beside window statistics + logistic regression.

    python -m benchmarks.accuracy                      # both data sets, all protocols (about an hour on 2 cores)
    python -m benchmarks.accuracy --dataset lis-emg-imu --quick

Each (protocol, split) is one JSON file under --out/raw/, written as soon as it is done, so an interrupted
benchmark continues where it stopped; the tables (accuracy.md) are rebuilt from all the raw files.

Protocols:
- stress-predict: subject-wise, 5 splits, each holding out a fifth of the subjects (every subject is a
  test subject once); validation subjects drawn from the rest. Budgets: 1%, 10%, 100% of the training labels.
- lis-emg-imu (one signer, three days): within-day stratified 5-fold ("kfold:5"; leaks session and time,
  see its SOURCE.md) and leave-one-day-out ("group:2020-07-09", the only day with every letter), the latter
  repeated with 3 seeds. Budgets: 1 and 5 labels per class, and all labels.
Model selection (early stopping, the baseline's C) uses validation windows only, never the test ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crossl_edge.data import load_windows
from crossl_edge.models import ModelConfig
from crossl_edge.training.device import place
from crossl_edge.training.pretrain import PretrainConfig
from crossl_edge.training.runs import (
    DataChoice, label_budget, prepare, run_pretraining, stats_baseline, train_and_score,
)
from crossl_edge.training.supervised import FinetuneConfig

log = logging.getLogger("benchmarks.accuracy")

#: (tag, mode, modality dropout); the learned methods. Those with modality dropout serve the
#: missing-sensor comparison and run only at the middle budget, to keep the benchmark near an hour.
METHODS = (
    ("supervised", "scratch", 0.0),
    ("supervised_mdrop", "scratch", 0.25),
    ("crossl_probe", "probe", 0.0),
    ("crossl_finetune", "finetune", 0.0),
    ("crossl_finetune_mdrop", "finetune", 0.25),
)
BASELINE = "stats_lr"


@dataclass
class Plan:
    dataset: str
    protocol: str
    splits: list[int]  # split indices (for group protocols: repeats with different seeds)
    budgets: list[tuple[str, float | None, int | None]]  # (label, fraction, per_class)
    epochs: int
    steps: int
    vicreg: tuple[float, float, float] = (10.0, 10.0, 100.0)  # sim, std, cov


def plans(dataset: str, quick: bool) -> list[Plan]:
    if dataset == "stress-predict":
        budgets = [("1%", 0.01, None), ("10%", 0.1, None), ("100%", 1.0, None)]
        return [Plan(dataset, "subjects", [0] if quick else list(range(5)), budgets[1:2] if quick else budgets,
                     1 if quick else 15, 20 if quick else 300)]
    if dataset == "lis-emg-imu":
        budgets = [("1/class", None, 1), ("5/class", None, 5), ("all", 1.0, None)]
        return [
            Plan(dataset, "kfold:5", [0] if quick else list(range(5)), budgets[1:2] if quick else budgets,
                 2 if quick else 40, 20 if quick else 300),
            Plan(dataset, "group:2020-07-09", [0] if quick else [0, 1, 2], budgets[1:2] if quick else budgets,
                 2 if quick else 40, 20 if quick else 300),
        ]
    raise SystemExit(f"unknown data set {dataset!r}; valid: stress-predict, lis-emg-imu")


def missing_budget(plan: Plan) -> str:
    """The budget at which sensors are removed at test time (the middle one)."""
    return plan.budgets[len(plan.budgets) // 2][0]


def run_split(plan: Plan, split: int, raw, out: Path, device: str) -> dict:
    """Pretrain once, then every method at every budget; returns {budget: {method: {subset: macro-F1}}}."""
    placement = place(device)
    choice = DataChoice(dataset=plan.dataset, protocol=plan.protocol, split=split, n_splits=5, split_seed=0)
    prep = prepare(choice, raw=raw)
    seed = split
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    backbone, pre = run_pretraining(
        out / "tmp" / f"{plan.protocol.replace(':', '_')}_{split}", prep, ModelConfig(),
        PretrainConfig(epochs=plan.epochs, seed=seed, sim=plan.vicreg[0], std=plan.vicreg[1], cov=plan.vicreg[2]),
        placement, progress=False,
    )
    result: dict = {"split": prep.split_info, "pretrain_seconds": pre.seconds, "budgets": {}}
    for label, fraction, per_class in plan.budgets:
        idx = label_budget(prep, fraction, per_class, seed)
        row: dict = {"labelled_windows": int(len(idx))}
        for tag, mode, mdrop in METHODS:
            if mdrop and label != missing_budget(plan):
                continue
            cfg = FinetuneConfig(mode=mode, max_steps=plan.steps, modality_dropout=mdrop, seed=seed)
            _, fit, scores = train_and_score(backbone, prep, idx, cfg, placement, progress=False)
            row[tag] = {"val": fit.best_val_f1, "seconds": fit.seconds, "test": scores}
        scores, c, val = stats_baseline(prep, idx)
        row[BASELINE] = {"val": val, "C": c, "test": scores}
        result["budgets"][label] = row
        log.info("%s %s split %d %s: %s", plan.dataset, plan.protocol, split, label,
                 {k: round(next(iter(v["test"].values())), 3) for k, v in row.items() if isinstance(v, dict)})
    result["seconds"] = time.perf_counter() - t0
    return result


def raw_path(out: Path, plan: Plan, split: int) -> Path:
    return out / "raw" / plan.dataset / f"{plan.protocol.replace(':', '_')}_split{split}.json"


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of the paired difference a - b and its standard error."""
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def report(plan: Plan, runs: list[dict]) -> str:
    methods = [m[0] for m in METHODS] + [BASELINE]
    budgets = list(runs[0]["budgets"])
    full = next(iter(runs[0]["budgets"][budgets[0]]["supervised"]["test"]))  # subsets are largest first
    seconds = sum(r["seconds"] for r in runs)
    lines = [
        f"### {plan.dataset}, protocol `{plan.protocol}`, {len(runs)} splits/repeats: test macro-F1, all sensors present",
        "",
        f"{plan.epochs} CroSSL epochs, VICReg sim/std/cov {'/'.join(f'{v:g}' for v in plan.vicreg)}, at most "
        f"{plan.steps} steps per downstream training; {seconds / 60:.1f} min of compute.",
        "",
    ]
    lines.append("| method | " + " | ".join(f"{b} ({runs[0]['budgets'][b]['labelled_windows']} labels)" for b in budgets) + " |")
    lines.append("|---|" + "---|" * len(budgets))
    for m in methods:
        cells = [mean_std([r["budgets"][b][m]["test"][full] for r in runs]) if m in runs[0]["budgets"][b] else "—" for b in budgets]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for m in ("crossl_probe", "crossl_finetune"):
        cells = []
        for b in budgets:
            d, se = paired([r["budgets"][b][m]["test"][full] for r in runs], [r["budgets"][b]["supervised"]["test"][full] for r in runs])
            verdict = "**> 2 SE**" if d > 2 * se else ("< -2 SE" if d < -2 * se else "within 2 SE")
            cells.append(f"{d:+.3f} ± {se:.3f} ({verdict})")
        lines.append(f"| paired {m} − supervised (± SE) | " + " | ".join(cells) + " |")
    lines.append("")
    # Missing sensors, at the middle budget: each subset, and the loss when one modality is removed.
    b = missing_budget(plan)
    subsets = list(runs[0]["budgets"][b]["supervised"]["test"].keys())
    lines.append(f"Missing sensors at {b} labels: test macro-F1 (mean over splits) per subset of sensors present")
    lines.append("")
    lines.append("| sensors present | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---|" * len(methods))
    for s in subsets:
        lines.append(f"| {s} | " + " | ".join(f"{np.mean([r['budgets'][b][m]['test'][s] for r in runs]):.3f}" for m in methods) + " |")
    names = full.split("+")
    if len(names) > 1:
        for gone in names:
            rest = "+".join(n for n in names if n != gone)
            cells = [f"{np.mean([r['budgets'][b][m]['test'][full] - r['budgets'][b][m]['test'][rest] for r in runs]):+.3f}" for m in methods]
            lines.append(f"| loss without {gone} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", action="append", choices=["stress-predict", "lis-emg-imu"],
                   help="data set (repeatable; default: both)")
    p.add_argument("--data", default=None, help="data folder (default: $CROSSL_EDGE_DATA, cache, download)")
    p.add_argument("--out", default="benchmarks/results/accuracy", help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="one split, one budget, tiny training: checks the pipeline, not accuracy")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--vicreg", type=lambda t: tuple(float(v) for v in t.split(",")), default=(10.0, 10.0, 100.0),
                   help="CroSSL's VICReg weights sim,std,cov (default: 10,10,100)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("crossl_edge").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.perf_counter()
    sections = []
    compute_s = 0.0
    for dataset in args.dataset or ["stress-predict", "lis-emg-imu"]:
        raw = load_windows(dataset, args.data)
        for plan in plans(dataset, args.quick):
            plan.vicreg = tuple(args.vicreg)
            runs = []
            for split in plan.splits:
                path = raw_path(out, plan, split)
                plan_json = json.loads(json.dumps(plan.__dict__))  # as stored: tuples become lists
                if path.is_file():
                    stored = json.loads(path.read_text())
                    stored["plan"].setdefault("vicreg", [10.0, 10.0, 100.0])  # files from before the --vicreg flag
                    if stored["plan"] == plan_json:
                        runs.append(stored)
                        continue
                r = run_split(plan, split, raw, out, args.device)
                r["plan"] = plan.__dict__
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(r, indent=1))
                runs.append(r)
            sections.append(report(plan, runs))
            compute_s += sum(r["seconds"] for r in runs)
    header = [
        "# Accuracy benchmark",
        "",
        f"Command: `python -m benchmarks.accuracy{' --quick' if args.quick else ''}"
        + (f" --vicreg {','.join(f'{v:g}' for v in args.vicreg)}" if tuple(args.vicreg) != (10.0, 10.0, 100.0) else "")
        + (f" --dataset {' --dataset '.join(args.dataset)}" if args.dataset else "")
        + f" --out {args.out}`: {compute_s / 60:.1f} min of compute over all splits (each timed when it ran); this "
        f"invocation took {time.perf_counter() - t0:.0f} s (splits already on disk are reused, see raw/).",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}.",
        "Mean ± standard deviation over splits; paired differences are per split, ± their standard error.",
        "",
    ]
    (out / "accuracy.md").write_text("\n".join(header + sections))
    print((out / "accuracy.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
