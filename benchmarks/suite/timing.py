"""Two ways to time small programs, and the statistics the ExecuTorch and LiteRT benchmark tools print.

- Streaming (`run_streaming`, the headline): window by window, every configuration once per window, in a new
  random order each window, as in a live loop, where a prediction is one call among other work and finds the
  CPU's caches and branch predictors holding something else.
- Warm (`run_interleaved`): each configuration in blocks of many calls in a row, blocks taken in turn; caches
  and branch predictors stay warm, which on this CPU made the programs about twice as fast as streaming.

Both spread every configuration over the whole run, so a noisy moment of a shared machine hits every row alike.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

#: a configuration whose repeat medians spread (max - min) more than this fraction of their median is noisy
NOISY_SPREAD = 0.20


def stats(us: list[float]) -> dict:
    a = np.asarray(us)
    return {"median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90)),
            "p99_us": float(np.percentile(a, 99)), "runs": int(len(a))}


def run_interleaved(configs: dict[str, Callable[[], object]], n: int, warmup: int, blocks: int = 10) -> dict[str, dict]:
    """Warm: `n` timed calls of every configuration (after `warmup` untimed ones), in `blocks` rounds."""
    times: dict[str, list[float]] = {k: [] for k in configs}
    for fn in configs.values():
        for _ in range(warmup):
            fn()
    per_block = max(1, n // blocks)
    for _ in range(blocks):
        for k, fn in configs.items():
            out = times[k]
            for _ in range(per_block):
                t = time.perf_counter_ns()
                fn()
                out.append((time.perf_counter_ns() - t) / 1e3)
    return {k: stats(v) for k, v in times.items()}


def run_streaming(configs: dict[str, Callable[[], object]], n: int, warmup: int, seed: int = 0) -> dict[str, dict]:
    """Streaming: `warmup` + `n` windows; in each, every configuration is called once, in a new random order (so
    each follows different work each time). The first `warmup` windows are not counted."""
    names = list(configs)
    times: dict[str, list[float]] = {k: [] for k in names}
    rng = np.random.default_rng(seed)
    for i in range(warmup + n):
        for j in rng.permutation(len(names)):
            k = names[j]
            fn = configs[k]
            t = time.perf_counter_ns()
            fn()
            if i >= warmup:
                times[k].append((time.perf_counter_ns() - t) / 1e3)
    return {k: stats(v) for k, v in times.items()}


def spread(medians: list[float]) -> dict:
    """Min/median/max of one configuration's per-repeat medians, and whether the repeats disagree."""
    a = np.asarray(medians, dtype=float)
    mid = float(np.median(a))
    rel = float((a.max() - a.min()) / mid) if mid > 0 else 0.0
    return {"repeats": int(len(a)), "min_us": float(a.min()), "median_us": mid, "max_us": float(a.max()),
            "spread": rel, "noisy": bool(len(a) > 1 and rel > NOISY_SPREAD)}
