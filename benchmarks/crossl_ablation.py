"""CroSSL ablation on LIS EMG-IMU's held-out day: masking strategy, keep-probability, VICReg weights, and no
pretraining at all, each *chosen on validation*.

    python -m benchmarks.crossl_ablation            # about 20 minutes on 2 CPU cores

Protocol, splits, seeds and label samples are those of `benchmarks.accuracy` (group:2020-07-09, repeats 0-2,
seed = repeat). The variants are ranked by validation macro-F1 (the last gestures of each letter's block on the
training days), never by test macro-F1, which is shown beside it only to see how well validation predicts it.
Writes benchmarks/results/accuracy/crossl_ablation.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from crossl_edge.data import load_windows
from crossl_edge.models import ModelConfig
from crossl_edge.training.device import place
from crossl_edge.training.pretrain import PretrainConfig
from crossl_edge.training.runs import DataChoice, label_budget, prepare, run_pretraining, train_and_score
from crossl_edge.training.supervised import FinetuneConfig

PROTOCOL = "group:2020-07-09"
EPOCHS = 150
STEPS = 600
VARIANTS = {
    "spatial 0.75, VICReg 10/10/100 (default)": dict(masking="spatial", keep_prob=0.75),
    "spatial 0.5": dict(masking="spatial", keep_prob=0.5),
    "spatial 0.9": dict(masking="spatial", keep_prob=0.9),
    "random 0.75": dict(masking="random", keep_prob=0.75),
    "feature 0.75": dict(masking="feature", keep_prob=0.75),
    "spatial 0.75, VICReg 25/25/1": dict(masking="spatial", keep_prob=0.75, sim=25.0, std=25.0, cov=1.0),
    "no pretraining (random weights)": dict(epochs=0),
}
#: (budget label, labels per class, downstream modes)
CELLS = (("1/class", 1, ("probe",)), ("5/class", 5, ("probe", "finetune")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crossl_ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/accuracy")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    raw = load_windows("lis-emg-imu", args.data)
    placement = place("cpu")
    t0 = time.perf_counter()
    rows = []
    for name, kw in VARIANTS.items():
        val: dict[str, list[float]] = {}
        test: dict[str, list[float]] = {}
        for split in range(args.repeats):
            prep = prepare(DataChoice(dataset="lis-emg-imu", protocol=PROTOCOL, split=split), raw=raw)
            scratch = out / "tmp" / "ablation"
            shutil.rmtree(scratch, ignore_errors=True)  # each variant is a new run in the same scratch folder
            backbone, _ = run_pretraining(scratch, prep, ModelConfig(), PretrainConfig(**{"epochs": EPOCHS, "seed": split, **kw}),
                                          placement, progress=False)
            for budget, per_class, modes in CELLS:
                idx = label_budget(prep, None, per_class, split)
                for mode in modes:
                    cfg = FinetuneConfig(mode=mode, max_steps=STEPS, seed=split)
                    _, fit, s = train_and_score(backbone, prep, idx, cfg, placement, progress=False)
                    val.setdefault(f"{mode} {budget}", []).append(fit.best_val_f1)
                    test.setdefault(f"{mode} {budget}", []).append(s["emg+acc+gyro"])
        rows.append((name, val, test))
        print(name, {k: (round(float(np.mean(val[k])), 3), round(float(np.mean(test[k])), 3)) for k in val}, flush=True)

    cells = list(rows[0][1])
    score = {name: float(np.mean([np.mean(v[c]) for c in cells])) for name, v, _ in rows}
    winner = max(score, key=score.get)
    lines = [
        f"# CroSSL ablation, LIS EMG-IMU held-out day ({PROTOCOL}, repeats 0-{args.repeats - 1})",
        "",
        f"Command: `python -m benchmarks.crossl_ablation`; {time.perf_counter() - t0:.0f} s on 2 CPU cores. {EPOCHS} "
        f"pretraining epochs, at most {STEPS} downstream steps. Cells: mean **validation** macro-F1 / mean test macro-F1 "
        "(all sensors). Variants are ranked by the mean validation macro-F1 over the cells; the test column is shown, "
        "never used to choose. The repeats share one test set of 78 gestures.",
        "",
        "| variant | " + " | ".join(cells) + " | mean validation |",
        "|---|" + "---|" * (len(cells) + 1),
    ]
    for name, val, test in rows:
        mark = " (chosen by validation)" if name == winner else ""
        lines.append(f"| {name}{mark} | " + " | ".join(f"{np.mean(val[c]):.3f} / {np.mean(test[c]):.3f}" for c in cells)
                     + f" | {score[name]:.3f} |")
    (out / "crossl_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
