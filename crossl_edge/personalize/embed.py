"""Global embeddings of windows through a bundle's own programs (the present modalities' encoders, then the
aggregator), which is what a personalised head is fitted on and later applied to. numpy only."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from crossl_edge.runtime.model import EdgeModel


def embed_windows(
    model: EdgeModel, windows: dict[str, np.ndarray], present: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    normalization: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(g [N, G], base logits [N, K]) of raw windows {name: [N, C, T]}, with only `present` modalities
    (default: every modality of `windows` that the bundle has) encoded and marked present.

    `normalization` {name: (mean [N, C], std [N, C])} standardises each window with its own statistics (a bundle
    trained with session normalisation, given its session's running statistics up to each window); default: the
    bundle's current ones."""
    names = [n for n in (present if present is not None else model.names) if n in windows]
    unknown = [n for n in (present or ()) if n not in model.names]
    if unknown or not names:
        raise ValueError(f"modalities {unknown or list(present or [])} are not in the bundle ({', '.join(model.names)})"
                         if unknown else "no window of any bundle modality given")
    n = len(windows[names[0]])
    g = np.empty((n, model.manifest.global_dim), dtype=np.float32)
    base = None
    for i in range(n):
        for name, (mean, std) in (normalization or {}).items():
            if name in names:
                model.set_normalization(name, mean[i], std[i])
        out = model.aggregate({name: model.encode(name, windows[name][i]) for name in names})
        if base is None:
            base = np.empty((n, len(out.base_logits)), dtype=np.float32)
        g[i], base[i] = out.embedding, out.base_logits
        if progress is not None:
            progress(i + 1)
    return g, base if base is not None else np.empty((0, 0), dtype=np.float32)
