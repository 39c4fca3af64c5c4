"""The bridge under the simulators: protocol parsing throughput, and frame-arrival-to-prediction latency
with every sensor of the bundle simulated (replaying a held-out subject) at real time, through the same
pty serial ports and bleak-backend stand-in a live run uses, a prediction every second."""

from __future__ import annotations


import numpy as np

from benchmarks.bridge_parse import bitalino_frames_per_s
from benchmarks.bridge_soak import run as run_rig
from crossl_edge.data.types import DataError
from crossl_edge.runtime import Bundle
from firmware_bridge.simulators.rig import bundle_rig


def parse_throughput(n: int) -> list[dict]:
    return [{"protocol": "BITalino", "channels": c, "chunk_bytes": chunk, "frames": n,
             "frames_per_s": bitalino_frames_per_s(c, chunk, n)} for c in (1, 6) for chunk in (4096, 65536)]


def frame_to_prediction(bundle: Bundle, seconds: float, data_root=None) -> dict:
    """Latency from a frame's read to the prediction that uses it, and the sensors' ledgers."""
    manifest = bundle.manifest
    try:
        result = run_rig(bundle.path, seconds, 1.0, False, data_root, hop_s=1.0,
                         make_rig=lambda tmp, clock: bundle_rig(manifest, tmp, clock, data_root))
    except (DataError, ValueError, OSError) as e:  # no recording to replay here (e.g. on a board)
        return {"skipped": f"no simulated sensors: {e}"}
    lat = np.asarray(result["latencies_ms"])
    # The first prediction waits for every sensor's first frames and the backend's first call, the last for
    # sensors being stopped: neither is the steady state a user lives in, so both are reported apart.
    steady = lat[1:-1]
    return {"seconds": seconds, "all_ms": _stats(lat), "latency_ms": _stats(steady),
            "first_ms": float(lat[0]) if len(lat) else None, "last_ms": float(lat[-1]) if len(lat) > 1 else None,
            "predictions": result["predictions"],
            "died": result["died"], "backend": result["backend"],
            "frames": {name: d.get("frames") for name, d in result["devices"].items()},
            "balanced": all(v["balanced"] for v in result["ledger"].values())}


def _stats(ms: np.ndarray) -> dict | None:
    if not len(ms):
        return None
    return {"n": int(len(ms)), "median": float(np.median(ms)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}
