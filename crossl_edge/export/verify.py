"""Export-time verification: every program of every backend against the PyTorch fp32 model, on held-out
real windows, through the same torch-free runtime code the device runs.

Tolerances (a bundle outside them is not written as verified; the export fails):
- fp32 programs: logits within FP32_LOGIT_TOL of PyTorch, the same argmax on at least FP32_AGREEMENT of windows.
- int8 programs: the same argmax as fp32 on at least INT8_AGREEMENT of windows and test macro-F1 no more than
  INT8_F1_DROP below fp32's. (The benchmark holds int8 to 1 point; the gate allows run-to-run calibration noise.)
  Agreement is a guard against a broken program, not the accuracy measure: on the binary Stress-Predict demo
  model a tenth of the held-out windows lie within 0.1 logit of the decision boundary, so an int8 program
  with every separable conv int8 flips 6% of them (agreement 0.937) while its macro-F1 moves by 0.002; a
  miscalibrated one measured 0.84.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from crossl_edge.export.programs import presence_patterns
from crossl_edge.metrics import macro_f1
from crossl_edge.models.crossl import CroSSLNet
from crossl_edge.runtime.model import EdgeModel

FP32_LOGIT_TOL = 1e-3
FP32_AGREEMENT = 0.999
INT8_AGREEMENT = 0.90
INT8_F1_DROP = 0.02


@dataclass
class Check:
    backend: str
    windows: int
    max_logit_diff: float
    argmax_agreement: float
    macro_f1_fp32: float
    macro_f1_backend: float
    encoder_rel_error: dict[str, float]  # ||embedding - fp32|| / ||fp32||, over all windows
    aggregate_max_logit_diff: float  # aggregator fed fp32 embeddings under random presence masks
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def line(self) -> str:
        return (f"{self.backend:<14} windows {self.windows}  max|dlogit| {self.max_logit_diff:.4f}  "
                f"argmax agreement {self.argmax_agreement:.4f}  macro-F1 fp32 {self.macro_f1_fp32:.4f} -> "
                f"{self.macro_f1_backend:.4f}  encoder rel. err. max {max(self.encoder_rel_error.values()):.4f}  "
                f"aggregate max|dlogit| {self.aggregate_max_logit_diff:.4f}"
                + ("  FAILED: " + "; ".join(self.failures) if self.failures else "  ok"))


def torch_reference(net: CroSSLNet, normalised: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """fp32 PyTorch per-modality embeddings {name: [N, D]} and all-present logits [N, K]."""
    net = net.eval().cpu()
    with torch.no_grad():
        x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in normalised.items()}
        z = {s.name: net.encoders[s.name](x[s.name]).numpy() for s in net.specs}
        logits = net(x).numpy()
    return z, logits


def check_backend(
    model: EdgeModel, net: CroSSLNet, raw: dict[str, np.ndarray], y: np.ndarray,
    ref_z: dict[str, np.ndarray], ref_logits: np.ndarray, int8: bool, seed: int = 0,
) -> Check:
    """Run `model` (a bundle on one backend) on raw windows {name: [N, C, T]} with labels y, compare to fp32."""
    n = len(y)
    names = model.names
    z = {name: np.stack([model.encode(name, raw[name][i]) for i in range(n)]) for name in names}
    logits = np.stack([model.aggregate({name: z[name][i] for name in names}).logits for i in range(n)])
    rel = {name: float(np.linalg.norm(z[name] - ref_z[name]) / max(np.linalg.norm(ref_z[name]), 1e-12)) for name in names}
    # the aggregator alone, on fp32 embeddings with sensors missing as the runtime sends them
    m = min(n, 1024)
    keep = presence_patterns(len(names), m, np.random.default_rng(seed), all_present=0.2)
    with torch.no_grad():
        zt = torch.from_numpy(np.stack([ref_z[name][:m] for name in names], axis=1)) * torch.from_numpy(keep)[:, :, None]
        agg_ref = net.head(net.aggregator.features(zt, torch.from_numpy(keep))).numpy()
    agg = np.stack([
        model.aggregate({name: zt[i, j].numpy() for j, name in enumerate(names) if keep[i, j]}).logits for i in range(m)
    ])
    pred, ref_pred = logits.argmax(1), ref_logits.argmax(1)
    k = len(model.class_names)
    c = Check(
        backend=model.backend, windows=n, max_logit_diff=float(np.abs(logits - ref_logits).max()),
        argmax_agreement=float((pred == ref_pred).mean()), macro_f1_fp32=macro_f1(y, ref_pred, k),
        macro_f1_backend=macro_f1(y, pred, k), encoder_rel_error=rel,
        aggregate_max_logit_diff=float(np.abs(agg - agg_ref).max()),
    )
    if int8:
        if c.argmax_agreement < INT8_AGREEMENT:
            c.failures.append(f"argmax agreement {c.argmax_agreement:.4f} < {INT8_AGREEMENT}")
        if c.macro_f1_fp32 - c.macro_f1_backend > INT8_F1_DROP:
            c.failures.append(f"macro-F1 drop {c.macro_f1_fp32 - c.macro_f1_backend:.4f} > {INT8_F1_DROP}")
    else:
        if max(c.max_logit_diff, c.aggregate_max_logit_diff) > FP32_LOGIT_TOL:
            c.failures.append(f"logit difference {max(c.max_logit_diff, c.aggregate_max_logit_diff):.2e} > {FP32_LOGIT_TOL}")
        if c.argmax_agreement < FP32_AGREEMENT:
            c.failures.append(f"argmax agreement {c.argmax_agreement:.4f} < {FP32_AGREEMENT}")
    return c
