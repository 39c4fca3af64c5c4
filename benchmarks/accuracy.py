"""Accuracy benchmark: macro-F1 on held-out people and days, supervised vs CroSSL probe vs CroSSL fine-tuned, at
several label budgets and with sensors missing, beside the references a practitioner would pick instead
(window statistics + logistic regression, MiniRocket), and the model that validation picks for export.

    python -m benchmarks.accuracy                      # both data sets, all protocols
    python -m benchmarks.accuracy --dataset lis-emg-imu --quick

Each (protocol, split) is one JSON file under --out/raw/, written as soon as it is done, so an interrupted
benchmark continues where it stopped; the tables (accuracy.md) and summary.json are rebuilt from all raw files.

Protocols:
- stress-predict: subject-wise, 5 splits, each holding out a fifth of the subjects (every subject is a
  test subject once); validation subjects drawn from the rest. Budgets: 1%, 10%, 100% of the training labels.
- lis-emg-imu (one signer, three days): leave-one-day-out ("group:2020-07-09", the only day with every letter;
  the headline), repeated with 3 seeds that share its 78 test gestures; validation is the last gestures of
  each letter's block on the training days. Also "@emg": the same with EMG alone (trained and tested on it).
  Within-day stratified 5-fold ("kfold:5") is kept as a row labelled within-session: it leaks session and
  time (a nearest neighbour on the timestamp alone scores 0.996), so it is evidence of nothing beyond one
  session. Budgets: 1 and 5 labels per class, and all labels.
Every choice uses validation windows only, never the test ones: early stopping, the probe's and the
references' regularisation, and `deployed`, the learned method with the best validation macro-F1 at that
budget and split (what `export` would publish). Intervals are a bootstrap over test units (accuracy_stats).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks import accuracy_stats as bs
from crossl_edge.baselines import fit_stats_baseline, stats_baseline_scores, window_features
from crossl_edge.data import load_windows
from crossl_edge.models import ModelConfig
from crossl_edge.training.device import place
from crossl_edge.training.pretrain import PretrainConfig
from crossl_edge.training.runs import (
    DataChoice, label_budget, prepare, run_pretraining, train_and_score,
)
from crossl_edge.training.supervised import FinetuneConfig, choose_by_validation, predict_logits

log = logging.getLogger("benchmarks.accuracy")

#: (tag, mode, modality dropout); the learned methods. Those with modality dropout serve the
#: missing-sensor comparison and run only at the middle budget, to keep the benchmark in its time.
METHODS = (
    ("supervised", "scratch", 0.0),
    ("supervised_mdrop", "scratch", 0.25),
    ("crossl_probe", "probe", 0.0),
    ("crossl_finetune", "finetune", 0.0),
    ("crossl_finetune_mdrop", "finetune", 0.25),
    ("random_probe", "random_probe", 0.0),
)
LEARNED = tuple(m[0] for m in METHODS)
DEPLOYED = "deployed"
REFERENCES = ("stats_lr", "minirocket")


@dataclass
class Plan:
    dataset: str
    protocol: str
    splits: list[int]  # split indices (for group protocols: repeats with different seeds)
    budgets: list[tuple[str, float | None, int | None]]  # (label, fraction, per_class)
    epochs: int
    steps: int
    vicreg: tuple[float, float, float] = (10.0, 10.0, 100.0)  # sim, std, cov
    modalities: list[str] | None = None  # None: all of the data set's
    minirocket_kernels: int = 2000  # per modality (Stress-Predict's 100% budget costs ~2.5 min per split); 0: none
    normalization: str = "global"  # or "session": per-user adaptation without labels (DataChoice.normalization)
    caveat: str = ""  # printed beside the section's title

    @property
    def key(self) -> str:
        """The protocol as tables name it: "group:2020-07-09@emg" for a modality subset, "+adapted" under
        session normalisation."""
        return (self.protocol + ("@" + "+".join(self.modalities) if self.modalities else "")
                + ("+adapted" if self.normalization == "session" else ""))

    @property
    def method_suffix(self) -> str:
        """What summary.json appends to a method's name: "@emg", "_adapted"."""
        return ("_adapted" if self.normalization == "session" else "") + ("@" + "+".join(self.modalities) if self.modalities else "")


def plans(dataset: str, quick: bool) -> list[Plan]:
    out = _plans(dataset, quick)
    for plan in out if quick else ():
        plan.minirocket_kernels = min(plan.minirocket_kernels, 168)  # checks the pipeline, not accuracy
    return out


def _plans(dataset: str, quick: bool) -> list[Plan]:
    if dataset == "stress-predict":
        budgets = [("1%", 0.01, None), ("10%", 0.1, None), ("100%", 1.0, None)]
        splits = [0] if quick else list(range(5))
        b = budgets[1:2] if quick else budgets
        return [Plan(dataset, "subjects", splits, b, 1 if quick else 12, 20 if quick else 400),
                Plan(dataset, "subjects", splits, budgets[1:2], 1 if quick else 12, 20 if quick else 400,
                     minirocket_kernels=0, normalization="session")]
    if dataset == "lis-emg-imu":
        budgets = [("1/class", None, 1), ("5/class", None, 5), ("all", 1.0, None)]
        b = budgets[1:2] if quick else budgets
        day = [0] if quick else [0, 1, 2]
        return [
            Plan(dataset, "group:2020-07-09", day, b, 2 if quick else 150, 20 if quick else 600, minirocket_kernels=10_000),
            Plan(dataset, "group:2020-07-09", day, b, 2 if quick else 150, 20 if quick else 600, modalities=["emg"],
                 minirocket_kernels=10_000),
            Plan(dataset, "group:2020-07-09", day, budgets[1:2], 2 if quick else 150, 20 if quick else 600,
                 minirocket_kernels=0, normalization="session"),
            Plan(dataset, "kfold:5", [0] if quick else [0, 1, 2], b, 2 if quick else 150, 20 if quick else 600,
                 minirocket_kernels=10_000, caveat="within-session: leaks session and time, not evidence beyond one session"),
        ]
    raise SystemExit(f"unknown data set {dataset!r}; valid: stress-predict, lis-emg-imu")


def missing_budget(plan: Plan) -> str:
    """The budget at which sensors are removed at test time (the middle one)."""
    return plan.budgets[len(plan.budgets) // 2][0]


def _minirocket():
    """The MiniRocket reference, or None when its extra (aeon) is not installed."""
    try:
        from crossl_edge.baselines import minirocket
        minirocket._minirocket_class()
    except ImportError:
        return None
    return minirocket


def run_split(plan: Plan, split: int, raw, out: Path, device: str) -> dict:
    """Pretrain once, then every method at every budget; returns per budget {method: {val, test: {subset: F1},
    pred: all-present test predictions}} plus the test labels and units for the bootstrap."""
    placement = place(device)
    choice = DataChoice(dataset=plan.dataset, protocol=plan.protocol, split=split, n_splits=5, split_seed=0,
                        modalities=plan.modalities, normalization=plan.normalization)
    prep = prepare(choice, raw=raw)
    seed = split
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    scratch = out / "tmp" / f"{plan.key.replace(':', '_')}_{split}"
    shutil.rmtree(scratch, ignore_errors=True)  # a split is stored whole or not at all: start it afresh
    backbone, pre = run_pretraining(
        scratch, prep, ModelConfig(),
        PretrainConfig(epochs=plan.epochs, seed=seed, sim=plan.vicreg[0], std=plan.vicreg[1], cov=plan.vicreg[2]),
        placement, progress=False,
    )
    test = prep.labelled(prep.test)
    units = prep.ws.subject[test] if plan.protocol == "subjects" else prep.ws.recording_ids()[test].astype(str)
    result: dict = {"split": prep.split_info, "pretrain_seconds": pre.seconds, "budgets": {},
                    "y_test": prep.ws.y[test].tolist(), "units": units.tolist()}
    test_ws = prep.ws.subset(test)
    x_test = prep.tensors(test)
    mr = _minirocket() if plan.minirocket_kernels else None
    for label, fraction, per_class in plan.budgets:
        idx = label_budget(prep, fraction, per_class, seed)
        row: dict = {"labelled_windows": int(len(idx))}
        fits = {}
        for tag, mode, mdrop in METHODS:
            if mdrop and (label != missing_budget(plan) or len(prep.ws.specs) == 1):
                continue  # modality dropout serves the missing-sensor table; with one sensor it does nothing
            cfg = FinetuneConfig(mode=mode, max_steps=plan.steps, modality_dropout=mdrop, seed=seed)
            net, fit, scores = train_and_score(backbone, prep, idx, cfg, placement, progress=False)
            pred = predict_logits(net, x_test).argmax(1).numpy()
            row[tag] = {"val": fit.best_val_f1, "val_loss": fit.val_loss, "seconds": fit.seconds, "test": scores,
                        "pred": pred.tolist()}
            fits[tag] = fit
        chosen = choose_by_validation(fits)  # validation only
        row[DEPLOYED] = {**row[chosen], "chosen": chosen}
        model, c, val = fit_stats_baseline(prep.ws.subset(idx), prep.ws.subset(prep.labelled(prep.val)))
        row["stats_lr"] = {"val": val, "C": c, "test": stats_baseline_scores(model, test_ws),
                           "pred": model.predict(window_features(test_ws)).tolist()}
        if mr is not None:
            t1 = time.perf_counter()
            model, alpha, val = mr.fit_minirocket_baseline(prep.ws.subset(idx), prep.ws.subset(prep.labelled(prep.val)),
                                                           n_kernels=plan.minirocket_kernels, seed=seed, n_jobs=1)
            row["minirocket"] = {"val": val, "alpha": alpha, "test": mr.minirocket_baseline_scores(model, test_ws),
                                 "pred": model.predict_windows(test_ws).tolist(), "seconds": time.perf_counter() - t1}
        result["budgets"][label] = row
        log.info("%s %s split %d %s: %s (deployed: %s)", plan.dataset, plan.key, split, label,
                 {k: round(next(iter(v["test"].values())), 3) for k, v in row.items() if isinstance(v, dict)}, chosen)
    result["seconds"] = time.perf_counter() - t0
    return result


def raw_path(out: Path, plan: Plan, split: int) -> Path:
    return out / "raw" / plan.dataset / f"{plan.key.replace(':', '_').replace('+', '-')}_split{split}.json"


def methods_of(runs: list[dict], budget: str) -> list[str]:
    present = runs[0]["budgets"][budget]
    return [m for m in LEARNED + (DEPLOYED,) + REFERENCES if m in present and all(m in r["budgets"][budget] for r in runs)]


class Intervals:
    """Bootstrap draws of one (plan, budget): per method, [n_draws] mean macro-F1 over splits."""

    def __init__(self, runs: list[dict], budget: str, n_classes: int) -> None:
        self.y = [np.asarray(r["y_test"]) for r in runs]
        self.weights = bs.draw_weights([np.asarray(r["units"]) for r in runs])
        self.runs, self.budget, self.k = runs, budget, n_classes
        self._cache: dict[str, np.ndarray] = {}

    def draws(self, method: str) -> np.ndarray:
        if method not in self._cache:
            preds = [np.asarray(r["budgets"][self.budget][method]["pred"]) for r in self.runs]
            self._cache[method] = bs.bootstrap_means(self.y, preds, self.weights, self.k)
        return self._cache[method]


def full_score(r: dict, budget: str, method: str) -> float:
    return next(iter(r["budgets"][budget][method]["test"].values()))  # subsets are largest first


def report(plan: Plan, runs: list[dict], n_classes: int, summary: list[dict]) -> str:
    budgets = list(runs[0]["budgets"])
    seconds = sum(r["seconds"] for r in runs)
    title = f"### {plan.dataset}, protocol `{plan.key}`, {len(runs)} splits/repeats: test macro-F1, all sensors present"
    lines = [
        title + (f" ({plan.caveat})" if plan.caveat else ""), "",
        f"{plan.epochs} CroSSL epochs, VICReg sim/std/cov {'/'.join(f'{v:g}' for v in plan.vicreg)}, at most "
        f"{plan.steps} steps per downstream training; {seconds / 60:.1f} min of compute. Cells: mean over splits "
        f"[95% interval: ± 1.96 bootstrap standard errors, resampling test {'subjects' if plan.protocol == 'subjects' else 'gestures'}].", "",
        "| method | " + " | ".join(f"{b} ({runs[0]['budgets'][b]['labelled_windows']} labels)" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    iv = {b: Intervals(runs, b, n_classes) for b in budgets}
    all_methods = [m for m in LEARNED + (DEPLOYED,) + REFERENCES if any(m in methods_of(runs, b) for b in budgets)]
    suffix = plan.method_suffix
    for m in all_methods:
        cells = []
        for b in budgets:
            if m not in methods_of(runs, b):
                cells.append("—")
                continue
            mean = float(np.mean([full_score(r, b, m) for r in runs]))
            low, high = bs.interval(mean, iv[b].draws(m))
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
            summary.append({"dataset": plan.dataset, "protocol": plan.protocol, "budget": b, "method": m + suffix,
                            "mean": round(mean, 4), "low": round(low, 4), "high": round(high, 4), "n": len(runs)})
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    chosen = {b: [r["budgets"][b][DEPLOYED]["chosen"] for r in runs] for b in budgets}
    lines.append("| deployed is (per split, by validation) | " + " | ".join(", ".join(chosen[b]) for b in budgets) + " |")
    # crossl_probe − random_probe: what CroSSL pretraining adds to the same probe on the same network's random weights
    pairs = [("crossl_probe", "supervised"), ("crossl_finetune", "supervised"), ("crossl_probe", "random_probe"),
             (DEPLOYED, "stats_lr"), (DEPLOYED, "minirocket")]
    for a, ref in pairs:
        if not all(a in methods_of(runs, b) and ref in methods_of(runs, b) for b in budgets):
            continue
        cells = []
        for b in budgets:
            d = float(np.mean([full_score(r, b, a) - full_score(r, b, ref) for r in runs]))
            se = float(np.std(iv[b].draws(a) - iv[b].draws(ref), ddof=1))
            verdict = "**> 2 SE**" if d > 2 * se else ("< -2 SE" if d < -2 * se else "within 2 SE")
            cells.append(f"{d:+.3f} ± {se:.3f} ({verdict})")
        lines.append(f"| paired {a} − {ref} (± bootstrap SE) | " + " | ".join(cells) + " |")
    lines.append("")
    b = missing_budget(plan)
    methods = methods_of(runs, b)
    subsets = list(runs[0]["budgets"][b]["supervised"]["test"].keys())
    if len(subsets) > 1:
        lines += [f"Missing sensors at {b} labels: test macro-F1 (mean over splits) per subset of sensors present", "",
                  "| sensors present | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for s in subsets:
            lines.append(f"| {s} | " + " | ".join(f"{np.mean([r['budgets'][b][m]['test'][s] for r in runs]):.3f}" for m in methods) + " |")
        full = subsets[0]
        for gone in full.split("+"):
            rest = "+".join(n for n in full.split("+") if n != gone)
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
    if _minirocket() is None:
        log.warning("MiniRocket rows skipped: its extra is not installed (pip install '.[minirocket]')")
    out = Path(args.out)
    t0 = time.perf_counter()
    sections: list[str] = []
    summary: list[dict] = []
    compute_s = 0.0
    threads: set[str] = set()  # as each split ran (reused splits may predate this invocation's --threads)
    for dataset in args.dataset or ["stress-predict", "lis-emg-imu"]:
        raw = load_windows(dataset, args.data)
        for plan in plans(dataset, args.quick):
            plan.vicreg = tuple(args.vicreg)
            plan_raw = raw if not plan.modalities else load_windows(dataset, args.data, modalities=plan.modalities)
            runs = []
            for split in plan.splits:
                path = raw_path(out, plan, split)
                plan_json = json.loads(json.dumps(plan.__dict__))  # as stored: tuples become lists
                if path.is_file():
                    stored = json.loads(path.read_text())
                    if stored.get("plan") == plan_json and "y_test" in stored:
                        runs.append(stored)
                        continue
                r = run_split(plan, split, plan_raw, out, args.device)
                r["plan"] = plan.__dict__
                r["torch_threads"] = torch.get_num_threads()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(r))
                runs.append(r)
            sections.append(report(plan, runs, len(raw.class_names), summary))
            compute_s += sum(r["seconds"] for r in runs)
            threads.update(str(r.get("torch_threads", "unrecorded")) for r in runs)
    command = ("python -m benchmarks.accuracy" + (" --quick" if args.quick else "")
               + (f" --vicreg {','.join(f'{v:g}' for v in args.vicreg)}" if tuple(args.vicreg) != (10.0, 10.0, 100.0) else "")
               + (f" --dataset {' --dataset '.join(args.dataset)}" if args.dataset else "") + f" --out {args.out}")
    header = [
        "# Accuracy benchmark", "",
        f"Command: `{command}`: {compute_s / 60:.1f} min of compute over all splits (each timed when it ran); this "
        f"invocation took {time.perf_counter() - t0:.0f} s (splits already on disk are reused, see raw/).",
        f"Machine: {platform.processor() or platform.machine()}, torch threads per split: {', '.join(sorted(threads))}, "
        f"Python {platform.python_version()}, torch {torch.__version__}.",
        "Every choice (early stopping, C, `deployed`) is made on validation windows; intervals are a bootstrap over "
        "test units that includes test sampling; paired differences use the same draws for both methods.", "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.md").write_text("\n".join(header + sections))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print((out / "accuracy.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
