"""Import time and peak resident memory of the runtime process as a device runs it: a fresh Python that
imports crossl_edge.runtime (numpy and a torch-free backend, never torch), loads the bundle and predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from crossl_edge.runtime import EdgeModel
t_import = time.perf_counter() - t0
m = EdgeModel(sys.argv[1], sys.argv[2], threads=1)
t_load = time.perf_counter() - t0
w = {s.name: np.random.default_rng(0).normal(size=(s.channels, s.window)).astype(np.float32) for s in m.specs}
for _ in range(200):
    m.predict(w)
# VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child of the (torch-laden) benchmark would
# report its parent's peak
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")] if sys.platform == "linux" else []
peak_mb = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"backend": m.backend, "import_s": t_import, "import_and_load_s": t_load, "max_rss_mb": peak_mb,
                  "torch_imported": "torch" in sys.modules}))
"""


def runtime_footprint(bundle: Path, backend: str) -> dict:
    """The probe's measurements, or {"skipped": why} when it cannot run (e.g. no torch-free backend)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-c", PROBE, str(bundle), backend], capture_output=True, text=True,
                       timeout=300, env=env)
    if p.returncode != 0:
        return {"skipped": f"the runtime probe failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])
