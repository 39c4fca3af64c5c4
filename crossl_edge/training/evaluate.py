"""Evaluation on held-out windows: macro-F1 with all modalities and with every non-empty subset."""

from __future__ import annotations

import numpy as np
import torch

from crossl_edge.metrics import macro_f1
from crossl_edge.models.crossl import CroSSLNet
from crossl_edge.spec import modality_subsets
from crossl_edge.training.supervised import predict_logits


def evaluate_subsets(
    net: CroSSLNet, x: dict[str, torch.Tensor], y: np.ndarray, subsets: list[tuple[str, ...]] | None = None
) -> dict[str, float]:
    """macro-F1 per modality subset, keyed "acc+eda" etc.; absent modalities get presence 0."""
    subsets = subsets if subsets is not None else modality_subsets(net.names)
    scores = {}
    for subset in subsets:
        unknown = set(subset) - set(net.names)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; the model has {list(net.names)}")
        presence = torch.tensor([1.0 if n in subset else 0.0 for n in net.names])  # [M], same for every window
        pred = predict_logits(net, x, presence).argmax(1).numpy()
        scores["+".join(subset)] = macro_f1(y, pred, net.n_classes)
    return scores
