"""The environment the tflite-runtime rows are measured in.

tflite-runtime 2.14 needs numpy<2 and ExecuTorch needs numpy>=2, so they cannot share the benchmark's Python.
`python -m benchmarks` therefore runs the same latency worker a second time in a venv of its own, made once
under the cache folder ($CROSSL_EDGE_CACHE, default ~/.cache/crossl_edge) with the pinned packages below from
the package registry (about 200 MB). It also holds ai-edge-litert, so that worker times LiteRT on the same .tflite
side by side with tflite-runtime; their ratio carries the tflite-runtime rows to the main run's PyTorch row.
By hand, the same thing:

    python3 -m venv ~/.cache/crossl_edge/bench-tflite-runtime
    ~/.cache/crossl_edge/bench-tflite-runtime/bin/pip install tflite-runtime==2.14.0 numpy==1.26.4 ai-edge-litert==2.3.0 tqdm==4.70.1
    python -m benchmarks --tflite-python ~/.cache/crossl_edge/bench-tflite-runtime/bin/python
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from crossl_edge.data.cache import cache_root

PINS = ("tflite-runtime==2.14.0", "numpy==1.26.4", "ai-edge-litert==2.3.0", "tqdm==4.70.1")
PROBE = "import numpy, tflite_runtime.interpreter, ai_edge_litert.interpreter; print(numpy.__version__)"


def default_dir() -> Path:
    return cache_root() / "bench-tflite-runtime"


def python_of(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def works(python: Path) -> str | None:
    """None if `python` can import tflite-runtime, ai-edge-litert and numpy, else why not."""
    try:
        p = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python} does not run: {e}"
    if p.returncode != 0:
        return f"{python} cannot import tflite-runtime and ai-edge-litert: {p.stderr.strip().splitlines()[-1:]}"
    return None


def ensure(folder: Path | None = None, log=print) -> tuple[Path | None, str | None]:
    """(the venv's python, None), made first if it is not there yet; or (None, why it could not be made)."""
    folder = folder or default_dir()
    python = python_of(folder)
    if python.exists() and works(python) is None:
        return python, None
    log(f"making the tflite-runtime environment in {folder} (numpy<2; once): pip install {' '.join(PINS)}")
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(folder)
        p = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINS], capture_output=True, text=True,
                           timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"could not make {folder}: {e}"
    if p.returncode != 0:
        tail = " ".join(p.stderr.strip().splitlines()[-2:])
        return None, f"pip could not install {' '.join(PINS)} into {folder}: {tail}"
    why = works(python)
    return (None, why) if why else (python, None)
