"""Few-shot personalisation benchmark: how much a head fitted on k labelled windows of a new user raises
macro-F1 on that user's later windows, over the bundle's generic head, and how long the fit takes.

    python -m benchmarks.personalize                                  # export/demo-int8 (+ export/lis-day-int8)
    python -m benchmarks.personalize --bundle export/demo-int8 --ks 1,5 --quick

Everything runs through the torch-free runtime, as on the device: the bundle's own programs give each
window's global embedding and generic logits (all modalities present), `crossl_edge.personalize.heads`
fits the heads. Per held-out subject (Stress-Predict) or held-out day (LIS), the first k windows of each
class adapt (`crossl_edge.personalize.protocol`: non-overlapping; Stress-Predict tests after the last of
them, so always on a later part of the session; LIS, one recording per gesture, after each letter's own),
and every k is tested on the same windows as the generic head.

Head kind and penalty are chosen on the *validation* subjects of the bundle's run (never the test ones);
the test subjects then report the chosen head and every other. Results: --out/personalize.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from crossl_edge.data import NormStats, load_windows
from crossl_edge.data.normalize import session_running_stats
from crossl_edge.metrics import macro_f1
from crossl_edge.personalize.embed import embed_windows
from crossl_edge.personalize.heads import HEADS, fit_head
from crossl_edge.personalize.protocol import adaptation_split
from crossl_edge.runtime.model import EdgeModel

log = logging.getLogger("benchmarks.personalize")

C_GRID = (0.001, 0.01, 0.1, 1.0)
DEFAULT_BUNDLES = ("export/demo-int8", "export/lis-day-int8")


def candidates(quick: bool) -> list[tuple[str, float]]:
    out = []
    for kind in HEADS:
        for c in ((0.1,) if quick else C_GRID) if kind != "prototype" else (0.0,):
            out.append((kind, c))
    return out


def units(model: EdgeModel, data: str | None) -> tuple[list[tuple[str, str, dict, np.ndarray, np.ndarray, np.ndarray, dict | None]], dict]:
    """(role, name, windows, y, t_start, stream, normalization) per held-out subject or day of the bundle's split,
    and facts. `normalization` is None, or for a bundle trained with session normalisation the running statistics
    of the unit's own stream up to each window (what the streaming classifier standardises with live)."""
    m = model.manifest
    src = m.raw["source"]
    choice = src["split"]
    dataset = src["dataset"]
    ws = load_windows(dataset, data, window_s=choice.get("window_s"), hop_s=choice.get("hop_s"),
                      modalities=list(model.names), download=False)
    class_map = np.array([m.class_names.index(c) if c in m.class_names else -1 for c in ws.class_names])
    y_all = np.where(ws.y >= 0, class_map[np.maximum(ws.y, 0)], -1)
    run_json = Path(src["run"]) / "run.json"
    val = json.loads(run_json.read_text())["split"].get("val", []) if run_json.is_file() else []
    protocol = choice["protocol"]
    out = []
    if protocol.startswith("group:"):
        key = protocol.split(":", 1)[1]
        keys, field = [("test", key)], ws.group
    else:
        keys = [("val", s) for s in val] + [("test", s) for s in src["test_subjects"]]
        field = ws.subject
    # a bundle trained with session normalisation: its training statistics only set the running std's floor
    training = None if m.session_std_floor is None else NormStats(
        mean={n: m.norm_mean[n] for n in model.names}, std={n: m.norm_std[n] for n in model.names})
    for role, key in keys:
        idx = np.flatnonzero(field == key)
        stream = np.arange(len(idx)) if protocol.startswith("group:") else np.zeros(len(idx), dtype=int)
        norm = None
        if training is not None:
            norm = session_running_stats(ws.subset(idx), np.zeros(len(idx)), training, m.session_std_floor)
        out.append((role, key, {n: ws.x[n][idx] for n in model.names}, y_all[idx], ws.t_start[idx], stream, norm))
    cut = "per-class" if protocol.startswith("group:") else "global"
    return out, {"dataset": dataset, "protocol": protocol, "cut": cut, "window_s": m.window_s,
                 "normalization": "global" if m.session_std_floor is None else "session"}


def bench_bundle(path: str, ks: tuple[int, ...], data: str | None, quick: bool, repeats: int) -> dict:
    model = EdgeModel(path, "auto", threads=1)
    k_classes = len(model.class_names)
    us, facts = units(model, data)
    if facts["protocol"].startswith("group:"):
        ks = (1, 2)  # the held-out LIS day has 3 gestures per letter: at most 2 adapt, 1 is left to test
    cands = candidates(quick)
    rows, skipped = [], []
    fit_times: dict[str, list[float]] = {f"{kind}:{c:g}": [] for kind, c in cands}
    for role, key, windows, y, t, stream, norm in us:
        split = adaptation_split(t, y, stream, k_classes, ks, facts["window_s"], facts["cut"])
        if split is None:
            skipped.append(key)
            log.warning("%s: fewer than %d non-overlapping windows of some class (or nothing left to test); skipped",
                        key, max(ks))
            continue
        adapt, test = split
        need = np.unique(np.concatenate([test, *adapt.values()]))
        t0 = time.perf_counter()
        g_part, base_part = embed_windows(model, {n: w[need] for n, w in windows.items()}, normalization=None if norm is None
                                          else {n: (mean[need], std[need]) for n, (mean, std) in norm.items()})
        embed_s = time.perf_counter() - t0
        g = np.zeros((len(y), g_part.shape[1]), np.float32)
        base = np.zeros((len(y), base_part.shape[1]), np.float32)
        g[need], base[need] = g_part, base_part
        generic = macro_f1(y[test], base[test].argmax(1), k_classes)
        row = {"role": role, "unit": key, "test_windows": int(len(test)), "generic": generic,
               "embed_ms_per_window": 1000 * embed_s / len(need), "heads": {}}
        for k in ks:
            a = adapt[k]
            for kind, c in cands:
                name = f"{kind}:{c:g}"
                best = float("inf")
                for _ in range(repeats if k == max(ks) else 1):
                    tf = time.perf_counter()
                    head = fit_head(kind, g[a], y[a], k_classes, base[a], C=c if c > 0 else 1.0)
                    best = min(best, time.perf_counter() - tf)
                if k == max(ks):
                    fit_times[name].append(best)
                f1 = macro_f1(y[test], head(g[test], base[test]).argmax(1), k_classes)
                row["heads"].setdefault(name, {})[str(k)] = f1
        rows.append(row)
        log.info("%s %s: generic %.3f; %s", role, key, generic, ", ".join(
            f"{n} k={k} {v:.3f}" for n, d in row["heads"].items() for k, v in d.items() if k == str(ks[len(ks) // 2])))
    select_on = "val" if any(r["role"] == "val" for r in rows) else None
    chosen = None
    if select_on:
        mid = str(5 if 5 in ks else ks[len(ks) // 2])
        gains = {n: np.mean([r["heads"][n][mid] - r["generic"] for r in rows if r["role"] == "val"]) for n in fit_times}
        chosen = max(gains, key=gains.get)
    return {"bundle": path, "backend": model.backend, "precision": model.manifest.precision, **facts, "ks": list(ks),
            "classes": list(model.class_names), "rows": rows, "skipped": skipped, "selected_on": select_on,
            "selection_k": int(mid) if select_on else None, "chosen": chosen,
            "fit_s": {n: {"median": float(np.median(v)), "max": float(np.max(v)), "n": len(v),
                          "windows": max(ks) * k_classes} for n, v in fit_times.items() if v}}


def summary(res: dict, role: str) -> dict[str, dict[str, tuple[float, float, int]]]:
    """head -> k -> (mean gain over generic, its standard error, units) for rows of `role`."""
    rows = [r for r in res["rows"] if r["role"] == role]
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for name in (rows[0]["heads"] if rows else {}):
        for k in map(str, res["ks"]):
            d = np.array([r["heads"][name][k] - r["generic"] for r in rows])
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            out.setdefault(name, {})[k] = (float(d.mean()), se, len(d))
    return out


def markdown(results: list[dict], command: str) -> str:
    lines = ["# Personalisation benchmark", "",
             f"Command: `{command}`. Machine: {platform.machine()}, Python {platform.python_version()}; "
             "everything through the torch-free runtime (1 thread).",
             "Macro-F1 of the personalised head minus the bundle's generic head on the same test windows of each "
             "held-out subject/day (mean ± standard error over them). Heads: `residual` (logistic regression "
             "correcting the generic logits), `logreg` (logistic regression on the global embedding alone), "
             "`prototype` (nearest class mean); `:C` is the inverse L2 strength.", ""]
    for res in results:
        adapted = ", on session-normalised windows (per-user adaptation)" if res.get("normalization") == "session" else ""
        lines += [f"## {res['dataset']} ({res['bundle']}, {res['precision']} on {res['backend']}, "
                  f"protocol `{res['protocol']}`, cut `{res['cut']}`{adapted})", ""]
        if res["chosen"]:
            lines.append(f"Head chosen on the validation subjects at k={res['selection_k']}: **{res['chosen']}**.")
        if res["skipped"]:
            lines.append(f"Skipped (too few windows of a class): {', '.join(res['skipped'])}.")
        lines.append("")
        for role in ("test", "val"):
            s = summary(res, role)
            if not s:
                continue
            rows = [r for r in res["rows"] if r["role"] == role]
            gen = np.mean([r["generic"] for r in rows])
            lines += [f"### {role} {'subjects' if res['cut'] == 'global' else 'day'}: "
                      f"{', '.join(r['unit'] for r in rows)}; generic head macro-F1 {gen:.3f} (mean)", "",
                      "| head | " + " | ".join(f"k={k}/class" for k in res["ks"]) + " |",
                      "|---|" + "---|" * len(res["ks"])]
            for name, d in s.items():
                mark = " (chosen)" if name == res["chosen"] else ""
                lines.append(f"| {name}{mark} | " + " | ".join(
                    f"{m:+.3f}" + (f" ± {se:.3f}" if np.isfinite(se) else "") for m, se, _ in d.values()) + " |")
            lines.append("")
            if role == "test":
                lines += ["Per unit (macro-F1: generic, then the chosen or first head at each k):", "",
                          "| unit | test windows | generic | " + " | ".join(f"k={k}" for k in res["ks"]) + " |",
                          "|---|---|---|" + "---|" * len(res["ks"])]
                name = res["chosen"] or next(iter(s))
                for r in rows:
                    lines.append(f"| {r['unit']} | {r['test_windows']} | {r['generic']:.3f} | "
                                 + " | ".join(f"{r['heads'][name][str(k)]:.3f}" for k in res["ks"]) + " |")
                lines.append("")
        lines += [f"Fit time at k={max(res['ks'])}/class ({max(res['ks']) * len(res['classes'])} windows), "
                  "median and max over units (best of repeats):", "",
                  "| head | median ms | max ms |", "|---|---|---|"]
        for n, f in res["fit_s"].items():
            lines.append(f"| {n} | {1000 * f['median']:.1f} | {1000 * f['max']:.1f} |")
        emb = np.median([r["embed_ms_per_window"] for r in res["rows"]])
        lines += ["", f"Embedding a window through the bundle (all encoders + aggregator): {emb:.2f} ms median.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.personalize", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", action="append", default=None,
                   help=f"bundle(s) to personalise (default: those of {', '.join(DEFAULT_BUNDLES)} that exist)")
    p.add_argument("--ks", default="1,5,20", help="labelled windows per class (default: %(default)s)")
    p.add_argument("--data", default=None, help="data folder (default: $CROSSL_EDGE_DATA, then the cache)")
    p.add_argument("--out", default="benchmarks/results/personalize", help="results folder (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="fits timed per unit at the largest k (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="one penalty per head")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bundles = args.bundle or [b for b in DEFAULT_BUNDLES if Path(b, "manifest.json").is_file()]
    if not bundles:
        raise SystemExit("no bundle: run `make demo` and `make bundle` first, or pass --bundle")
    ks = tuple(sorted({int(k) for k in args.ks.split(",")}))
    results = [bench_bundle(b, ks, args.data, args.quick, args.repeats) for b in bundles]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.personalize " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    (out / "personalize.json").write_text(json.dumps(results, indent=1))
    (out / "personalize.md").write_text(markdown(results, command.strip()))
    print((out / "personalize.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
