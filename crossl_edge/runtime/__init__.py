"""The on-device runtime: numpy plus one backend (ai-edge-litert, tflite-runtime or ExecuTorch); never torch.

    from crossl_edge.runtime import EdgeModel, StreamingClassifier
    model = EdgeModel("export/demo-int8")          # checks every file's sha256 first
    stream = StreamingClassifier(model)
    stream.push("acc", samples, t0)                # [n, C] samples at the native rate, first at host time t0
    for p in stream.poll(): print(p.t, p.label, p.probs)
"""

from crossl_edge.runtime.backends import BACKENDS, BackendUnavailable, choose_backend
from crossl_edge.runtime.bundle import Bundle, BundleError, Manifest, load_bundle
from crossl_edge.runtime.model import EdgeModel, InputError, Output

__all__ = [
    "BACKENDS", "BackendUnavailable", "Bundle", "BundleError", "EdgeModel", "InputError", "Manifest", "Output",
    "choose_backend", "load_bundle",
]
