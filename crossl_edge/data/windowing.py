"""Cut recordings into fixed-length windows, every modality at its native rate.

Window k of a recording covers the time span [k*hop_s, k*hop_s + window_s) seconds. For a modality at
`rate` Hz it is the samples [round(k*hop_s*rate), round(k*hop_s*rate) + window_s*rate), so the windows of
all modalities start at the same instant (to within half a sample) and nothing is resampled: a 10 s window
is 320 ACC samples at 32 Hz and 40 EDA samples at 4 Hz.

Labels: entry j of a label track at `label_rate` Hz covers [j/label_rate, (j+1)/label_rate). A window's
label is the majority class among the entries overlapping it, provided at least `min_label_fraction` of
those entries are labelled (>= 0); otherwise -1. Ties go to the lower class index. Unlabelled windows are
kept, with y = -1: self-supervised pretraining uses them, supervised code filters on y >= 0.

Nothing is dropped silently: windows holding NaN or inf are dropped and counted, recordings shorter than
one window are an error (or, with skip_short=True, skipped and counted), and every count is logged and
returned in a WindowReport by `make_windows_with_report`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from crossl_edge.data.types import DataError, Recording, WindowSet
from crossl_edge.spec import ModalitySpec, SpecError, check_specs

log = logging.getLogger(__name__)


@dataclass
class WindowReport:
    """What windowing produced and what it left out, for logs and run records."""

    n_recordings: int = 0
    n_windows: int = 0  # windows in the returned WindowSet
    n_unlabelled: int = 0  # of which y == -1
    class_counts: dict[str, int] = field(default_factory=dict)
    n_dropped_nonfinite: int = 0  # windows dropped because a modality held NaN or inf
    skipped_short: list[tuple[str, float]] = field(default_factory=list)  # (subject, duration s)


def _window_specs(specs: Sequence[ModalitySpec], window_s: float) -> tuple[ModalitySpec, ...]:
    try:
        return check_specs(s.with_window_seconds(window_s) for s in specs)
    except SpecError as e:
        raise DataError(f"window_s={window_s:g} does not fit the modalities: {e}") from e


def _check_recording(rec: Recording, specs: tuple[ModalitySpec, ...], n_classes: int) -> None:
    rec.check()
    for s in specs:
        if s.name not in rec.signals:
            raise DataError(
                f"recording of subject {rec.subject!r} lacks modality {s.name!r} (it has {sorted(rec.signals)})"
            )
        if abs(rec.rates[s.name] - s.sample_rate) > 1e-6 * s.sample_rate:
            raise DataError(
                f"subject {rec.subject!r}: {s.name} is at {rec.rates[s.name]:g} Hz "
                f"but the spec says {s.sample_rate:g} Hz"
            )
        if rec.signals[s.name].shape[0] != s.channels:
            raise DataError(
                f"subject {rec.subject!r}: {s.name} has {rec.signals[s.name].shape[0]} channels, spec says {s.channels}"
            )
    if rec.labels is not None and rec.labels.size and rec.labels.max() >= n_classes:
        raise DataError(
            f"subject {rec.subject!r}: label {int(rec.labels.max())} is out of range for {n_classes} class names"
        )


def _n_windows(rec: Recording, specs: tuple[ModalitySpec, ...], window_s: float, hop_s: float) -> int:
    """How many windows fit in every modality of `rec`."""
    duration = min(rec.signals[s.name].shape[1] / s.sample_rate for s in specs)
    if duration < window_s - 1e-9:
        return 0
    n = int(np.floor((duration - window_s) / hop_s + 1e-9)) + 1
    ks = np.arange(n)
    for s in specs:
        starts = np.round(ks * hop_s * s.sample_rate).astype(np.int64)
        n = min(n, int(np.count_nonzero(starts + s.window <= rec.signals[s.name].shape[1])))
    return n


def window_labels(
    labels: np.ndarray | None,
    label_rate: float,
    t_start: np.ndarray,
    window_s: float,
    n_classes: int,
    min_label_fraction: float = 0.5,
) -> np.ndarray:
    """int64 [N] window labels for windows starting at `t_start` [N] (seconds); see the module docstring."""
    n = len(t_start)
    if labels is None or n == 0:
        return np.full(n, -1, dtype=np.int64)
    lo = np.floor(t_start * label_rate + 1e-9).astype(np.int64)  # [N] first entry overlapping the window
    hi = np.maximum(lo + 1, np.ceil((t_start + window_s) * label_rate - 1e-9).astype(np.int64))  # [N] one past last
    width = hi - lo  # [N] entries overlapping each window
    m = int(width.max())
    padded = np.concatenate([labels, np.full(max(0, int(hi.max()) - len(labels)), -1, dtype=labels.dtype)])
    idx = lo[:, None] + np.arange(m)[None, :]  # [N, m]
    inside = np.arange(m)[None, :] < width[:, None]  # [N, m]
    entries = np.where(inside, padded[np.minimum(idx, len(padded) - 1)], -1)  # [N, m]
    labelled = entries >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], entries.shape)
    counts = np.bincount(rows[labelled] * n_classes + entries[labelled], minlength=n * n_classes)
    counts = counts.reshape(n, n_classes)  # [N, K]
    n_lab = labelled.sum(axis=1)
    ok = (n_lab > 0) & (n_lab >= min_label_fraction * width - 1e-9)
    return np.where(ok, counts.argmax(axis=1), -1).astype(np.int64)


def make_windows_with_report(
    recordings: Sequence[Recording],
    specs: Sequence[ModalitySpec],
    window_s: float,
    hop_s: float,
    class_names: Sequence[str],
    min_label_fraction: float = 0.5,
    skip_short: bool = False,
) -> tuple[WindowSet, WindowReport]:
    """`make_windows`, also returning the WindowReport of counts."""
    if not (window_s > 0 and hop_s > 0):
        raise DataError(f"window_s and hop_s must be positive seconds, got window_s={window_s!r}, hop_s={hop_s!r}")
    if not 0.0 <= min_label_fraction <= 1.0:
        raise DataError(f"min_label_fraction must be within [0, 1], got {min_label_fraction!r}")
    class_names = tuple(class_names)
    specs = _window_specs(specs, window_s)
    report = WindowReport(n_recordings=len(recordings))

    counts: list[int] = []
    for rec in recordings:
        _check_recording(rec, specs, len(class_names))
        n = _n_windows(rec, specs, window_s, hop_s)
        if n == 0:
            duration = rec.duration()
            if not skip_short:
                raise DataError(
                    f"recording of subject {rec.subject!r} lasts {duration:.2f} s, shorter than one {window_s:g} s "
                    "window; use a shorter window, drop the recording, or pass skip_short=True to skip such recordings"
                )
            report.skipped_short.append((rec.subject, duration))
        counts.append(n)

    total = int(sum(counts))
    x = {s.name: np.empty((total, s.channels, s.window), dtype=np.float32) for s in specs}
    y = np.empty(total, dtype=np.int64)
    t_start = np.empty(total, dtype=np.float64)
    subject = np.empty(total, dtype=object)
    group = np.empty(total, dtype=object)
    off = 0
    for rec, n in zip(recordings, counts):
        if n == 0:
            continue
        ks = np.arange(n)
        t = ks * hop_s
        for s in specs:
            starts = np.round(t * s.sample_rate).astype(np.int64)  # [n]
            idx = starts[:, None] + np.arange(s.window)[None, :]  # [n, T]
            x[s.name][off : off + n] = np.moveaxis(rec.signals[s.name][:, idx], 0, 1)  # [C, n, T] -> [n, C, T]
        y[off : off + n] = window_labels(
            rec.labels, rec.label_rate, t, window_s, len(class_names), min_label_fraction
        )
        t_start[off : off + n] = t
        subject[off : off + n] = rec.subject
        group[off : off + n] = rec.group
        off += n

    finite = np.ones(total, dtype=bool)
    for s in specs:
        finite &= np.isfinite(x[s.name]).all(axis=(1, 2))
    report.n_dropped_nonfinite = int(total - finite.sum())
    ws = WindowSet(
        specs=specs,
        x=x,
        y=y,
        subject=subject.astype(str) if total else np.empty(0, dtype=str),
        group=group.astype(str) if total else np.empty(0, dtype=str),
        t_start=t_start,
        class_names=class_names,
    )
    if report.n_dropped_nonfinite:
        ws = ws.subset(finite)
    report.n_windows = len(ws)
    report.n_unlabelled = int((ws.y < 0).sum())
    report.class_counts = {c: int((ws.y == i).sum()) for i, c in enumerate(class_names)}
    log.info(
        "cut %d windows of %g s (hop %g s) from %d recordings: %s, %d unlabelled; dropped %d with NaN/inf; "
        "skipped %d recordings shorter than a window%s",
        report.n_windows,
        window_s,
        hop_s,
        len(recordings),
        ", ".join(f"{c}={k}" for c, k in report.class_counts.items()),
        report.n_unlabelled,
        report.n_dropped_nonfinite,
        len(report.skipped_short),
        f" {report.skipped_short}" if report.skipped_short else "",
    )
    if report.n_windows == 0:
        log.warning("windowing produced no windows")
    return ws, report


def make_windows(
    recordings: Sequence[Recording],
    specs: Sequence[ModalitySpec],
    window_s: float,
    hop_s: float,
    class_names: Sequence[str],
    min_label_fraction: float = 0.5,
    skip_short: bool = False,
) -> WindowSet:
    """Windows of `window_s` seconds every `hop_s` seconds from each recording: x[name] float32 [N, C, T].

    `specs` give the modalities to cut (their `window` is replaced by window_s at the native rate, so
    templates with any window work); modalities of a recording not in `specs` are ignored. Raises
    DataError for a missing modality, a rate or channel mismatch, a label outside `class_names`, or a
    recording shorter than one window (unless `skip_short`). Counts are logged; see
    `make_windows_with_report` to get them back.
    """
    return make_windows_with_report(
        recordings, specs, window_s, hop_s, class_names, min_label_fraction=min_label_fraction, skip_short=skip_short
    )[0]
