"""`python -m crossl_edge.personalize --bundle B --out B-me (--from SOURCE | --device ... | --simulate | --refit F)`.

Few-shot personalisation on the device, without torch: collect N labelled windows of each class, take their
global embeddings from the bundle's own programs, fit a new head in numpy, and write a personalised bundle
(the same programs, a new head, a new manifest with checksums) beside the original, which is never touched.
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

from crossl_edge import cli
from crossl_edge.personalize.heads import DEFAULT_C, DEFAULT_HEAD, HEADS, MIN_PER_CLASS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crossl_edge.personalize",
        description="Personalise a bundle's classifier from a few labelled windows of one user, on the device (numpy "
        "and the bundle's runtime; no torch). Writes a new bundle; the original is left as it is.",
    )
    p.add_argument("--bundle", required=True, help="the bundle to personalise (written by `python -m crossl_edge.export`)")
    p.add_argument("--out", required=True, help="folder of the personalised bundle (never the original)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="source", metavar="SOURCE",
                     help="a labelled recording: replay:<dataset>:<subject> or a BYO folder with labels")
    src.add_argument("--device", action="append", metavar="KIND:ADDRESS[,OPTIONS]",
                     help="live sensors, as for `crossl_edge.run --device` (repeatable); you are asked to do each class")
    src.add_argument("--simulate", action="store_true",
                     help="simulated sensors replaying a held-out subject; each class from its stretch of the recording")
    src.add_argument("--refit", metavar="COLLECTED_NPZ",
                     help="fit again on the windows a personalised bundle collected (its collected.npz)")
    p.add_argument("--classes", type=cli.names, default=None,
                   help="comma-separated class names, in order (default: the source's labelled classes; needed with "
                   "--device/--simulate, where any names may be given)")
    p.add_argument("--windows", type=int, default=5, help="labelled windows per class (default: %(default)s)")
    p.add_argument("--min-per-class", type=int, default=None,
                   help=f"refuse to fit with fewer windows of a class (default: the --windows asked for; at least {MIN_PER_CLASS})")
    p.add_argument("--head", choices=HEADS, default=None,
                   help=f"head to fit (default: {DEFAULT_HEAD} when the classes are the bundle's, else logreg); see "
                   "crossl_edge/personalize/heads.py")
    p.add_argument("--C", type=float, default=DEFAULT_C,
                   help="inverse L2 strength of the logistic heads (default: %(default)s; smaller stays nearer the generic head)")
    p.add_argument("--present", type=cli.names, default=None,
                   help="--from: modalities to use (default: all of the bundle's); the others count as absent")
    p.add_argument("--skip", type=float, default=0.0, help="--from: ignore the first SKIP seconds of each recording")
    p.add_argument("--subject", default=None, help="--simulate: subject to replay (default: the bundle's first held-out one)")
    p.add_argument("--speed", type=float, default=1.0, help="--simulate: simulation speed (default: %(default)s)")
    p.add_argument("--yes", action="store_true", help="--device/--simulate: do not wait for Enter before each class")
    p.add_argument("--backend", default="auto", choices=["auto", "litert", "tflite-runtime", "executorch"],
                   help="runtime (default: auto)")
    p.add_argument("--replace", action="store_true", help="overwrite --out if it holds a bundle")
    p.add_argument("--sign-key", default=None, metavar="NAME.key",
                   help="sign the personalised manifest with this Ed25519 key (a device that checks signatures runs "
                   "only bundles signed by a key it trusts; needs the signing extra)")
    p.add_argument("--data", default=None, help="data folder for replay: sources (default: $CROSSL_EDGE_DATA, the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def body(args: argparse.Namespace) -> int:
    from crossl_edge.metrics import macro_f1
    from crossl_edge.personalize.bundle import Collected, write_personalized
    from crossl_edge.personalize.collect import from_recording, from_sensors
    from crossl_edge.personalize.heads import PersonalizeError, check_counts, fit_head
    from crossl_edge.runtime.model import EdgeModel
    from crossl_edge.runtime.signing import load_signing_key

    if args.windows < 1:
        raise PersonalizeError("--windows must be at least 1")
    need = max(MIN_PER_CLASS, args.min_per_class if args.min_per_class is not None else args.windows)
    signing_key = load_signing_key(args.sign_key) if args.sign_key else None  # a bad key fails before collecting
    model = EdgeModel(args.bundle, args.backend, threads=1)
    m = model.manifest
    if args.refit:
        collected = Collected.load(args.refit)
    elif args.source:
        collected = from_recording(model, args.source, args.windows, args.classes, args.present, args.skip, args.data,
                                   args.quiet)
    else:
        if args.speed <= 0 or (args.device and args.speed != 1.0):
            raise PersonalizeError("--speed must be positive, and applies to --simulate only")
        classes = args.classes or list(m.class_names)
        collected = from_sensors(model, classes, args.windows, args.device, args.simulate, args.subject, args.speed,
                                 args.data, prompt=None if args.yes else _ask, quiet=args.quiet)
    if len(collected.class_names) < 2:
        raise PersonalizeError(f"a classifier needs at least two classes; got {', '.join(collected.class_names) or 'none'}")
    counts = check_counts(collected.y, collected.class_names, need)
    same_classes = tuple(collected.class_names) == tuple(m.class_names)
    kind = args.head or (DEFAULT_HEAD if same_classes else "logreg")
    if kind == "residual" and not same_classes:
        raise PersonalizeError(f"--head residual corrects the bundle's own head, so the classes must be its "
                               f"{', '.join(m.class_names)}; use --head logreg or prototype for {', '.join(collected.class_names)}")
    t0 = time.perf_counter()
    head = fit_head(kind, collected.g, collected.y, len(collected.class_names), collected.base_logits, C=args.C)
    fit_s = time.perf_counter() - t0
    k = len(collected.class_names)
    train_f1 = macro_f1(collected.y, head(collected.g, collected.base_logits).argmax(1), k)
    info = {"head": kind, "C": args.C if kind != "prototype" else None, "fit_s": round(fit_s, 5),
            "collected_macro_f1": round(train_f1, 4), "backend": model.backend,
            "source": args.source or args.refit or ("simulate" if args.simulate else "devices")}
    if same_classes:
        info["collected_macro_f1_generic"] = round(macro_f1(collected.y, collected.base_logits.argmax(1), k), 4)
    out, checks = write_personalized(model.bundle, args.out, head, collected, info, replace=args.replace,
                                      signing_key=signing_key)
    print(f"{kind} head on {sum(counts.values())} windows ({', '.join(f'{c} {n}' for c, n in counts.items())}; present: "
          f"{', '.join(collected.present)}) fitted in {1000 * fit_s:.1f} ms; macro-F1 on those windows "
          f"{train_f1:.3f}" + (f" (generic head {info['collected_macro_f1_generic']:.3f})" if same_classes else ""))
    print("parity from disk: " + ", ".join(f"{b} max |dlogit| {c['max_logit_diff']:.1e} on {c['windows']} windows"
                                           for b, c in checks.items()))
    print(f"personalised bundle {out} written (original {m.name} unchanged); run it: "
          f"python -m crossl_edge.run --bundle {out} ...")
    return 0


def _ask(text: str) -> None:
    from crossl_edge.personalize.heads import PersonalizeError

    try:
        input(text)
    except EOFError:
        raise PersonalizeError("no terminal to ask on (stdin is closed); pass --yes to collect without asking") from None


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)
