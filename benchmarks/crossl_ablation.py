"""CroSSL ablation on LIS EMG-IMU within-day folds: masking strategy, keep-probability, VICReg weights.

    python -m benchmarks.crossl_ablation            # about 20 minutes on 2 CPU cores

Splits, seeds and label samples are those of `benchmarks.accuracy` (kfold:5, splits 0-2, seed = split), so
each variant is paired with the supervised-from-scratch scores stored in its raw results. Writes
benchmarks/results/accuracy/crossl_ablation.md. Only LIS: a Stress-Predict variant costs ~3 min per split.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np

from crossl_edge.data import load_windows
from crossl_edge.models import ModelConfig
from crossl_edge.training.device import place
from crossl_edge.training.pretrain import PretrainConfig
from crossl_edge.training.runs import DataChoice, label_budget, prepare, run_pretraining, train_and_score
from crossl_edge.training.supervised import FinetuneConfig

VARIANTS = {
    "spatial 0.75, VICReg 10/10/100 (default)": dict(masking="spatial", keep_prob=0.75),
    "spatial 0.5": dict(masking="spatial", keep_prob=0.5),
    "spatial 0.9": dict(masking="spatial", keep_prob=0.9),
    "random 0.75": dict(masking="random", keep_prob=0.75),
    "feature 0.75": dict(masking="feature", keep_prob=0.75),
    "spatial 0.75, VICReg 25/25/1": dict(masking="spatial", keep_prob=0.75, sim=25.0, std=25.0, cov=1.0),
}
BUDGETS = (("1/class", 1), ("5/class", 5))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crossl_ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/accuracy")
    args = p.parse_args(argv)
    out = Path(args.out)
    raw = load_windows("lis-emg-imu", args.data)
    placement = place("cpu")
    t0 = time.perf_counter()
    rows = []
    for name, kw in VARIANTS.items():
        scores: dict[str, dict[str, list[float]]] = {b: {"probe": [], "finetune": [], "supervised": []} for b, _ in BUDGETS}
        for split in range(args.splits):
            prep = prepare(DataChoice(dataset="lis-emg-imu", protocol="kfold:5", split=split), raw=raw)
            scratch = out / "tmp" / "ablation"
            shutil.rmtree(scratch, ignore_errors=True)  # each variant is a new run in the same scratch folder
            backbone, _ = run_pretraining(scratch, prep, ModelConfig(), PretrainConfig(epochs=40, seed=split, **kw),
                                          placement, progress=False)
            stored = json.loads((out / "raw" / "lis-emg-imu" / f"kfold_5_split{split}.json").read_text())
            for budget, per_class in BUDGETS:
                idx = label_budget(prep, None, per_class, split)
                for mode in ("probe", "finetune"):
                    cfg = FinetuneConfig(mode=mode, max_steps=300, seed=split)
                    _, _, s = train_and_score(copy.deepcopy(backbone), prep, idx, cfg, placement, progress=False)
                    scores[budget][mode].append(s["emg+acc+gyro"])
                scores[budget]["supervised"].append(stored["budgets"][budget]["supervised"]["test"]["emg+acc+gyro"])
        rows.append((name, scores))
        print(name, {b: {m: round(float(np.mean(v)), 3) for m, v in d.items()} for b, d in scores.items()}, flush=True)

    def cell(a, b):
        d = np.asarray(a) - np.asarray(b)
        return f"{np.mean(a):.3f} ({d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f})"

    lines = [
        "# CroSSL ablation, LIS EMG-IMU within-day folds (kfold:5, splits 0-%d)" % (args.splits - 1),
        "",
        f"Command: `python -m benchmarks.crossl_ablation`; {time.perf_counter() - t0:.0f} s on 2 CPU cores. 40 pretraining "
        "epochs, 300 downstream steps. Cells: mean test macro-F1 (all sensors) and, in brackets, the paired "
        "difference to supervised-from-scratch on the same split and labels ± its standard error.",
        "",
        "| variant | " + " | ".join(f"probe {b} | fine-tune {b}" for b, _ in BUDGETS) + " |",
        "|---|" + "---|---|" * len(BUDGETS),
    ]
    for name, scores in rows:
        cells = []
        for b, _ in BUDGETS:
            cells += [cell(scores[b]["probe"], scores[b]["supervised"]), cell(scores[b]["finetune"], scores[b]["supervised"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sup = rows[0][1]
    lines += ["", "Supervised from scratch on the same splits: " + ", ".join(
        f"{b} {np.mean(sup[b]['supervised']):.3f}" for b, _ in BUDGETS)]
    (out / "crossl_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
