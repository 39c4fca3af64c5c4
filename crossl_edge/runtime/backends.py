"""Program runners: load one backend's program file from a checked bundle and run its programs.

A runner moves arrays already in each tensor's stored type (float32 or int8) in and out; quantising,
normalising and dequantising live in `crossl_edge.runtime.model`, shared by every backend.

- "litert": Google's ai-edge-litert (the maintained TFLite runtime), numpy only. The Pi path.
- "tflite-runtime": the older tflite-runtime package on the same .tflite file (needs numpy<2, so it
  lives in its own environment; it does not delegate int8 to XNNPACK and is about 6x slower).
- "executorch": the ExecuTorch Python runtime on the .pte file. Its Python bindings import torch, so
  this backend is for machines that have torch; the runtime module itself never imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from crossl_edge.runtime.bundle import MANIFEST, Bundle, BundleError, TensorIO

#: backend name -> (bundle file it runs, Python module it needs)
BACKENDS = {"litert": ("litert", "ai_edge_litert"), "tflite-runtime": ("litert", "tflite_runtime"),
            "executorch": ("executorch", "executorch")}
AUTO_ORDER = ("litert", "tflite-runtime", "executorch")
#: pip packages that provide each backend, for error messages
PACKAGES = {"litert": "ai-edge-litert==2.3.0 (pip install '.[edge]')",
            "tflite-runtime": "tflite-runtime==2.14.0 with numpy<2, in its own environment",
            "executorch": "executorch==1.4.1 with torch==2.13.0 (pip install torch==2.13.0 '.[export]')"}


class BackendUnavailable(BundleError):
    """The asked-for backend is not installed here, or the bundle has no program for it."""


def installed(backend: str) -> bool:
    needs = [BACKENDS[backend][1]] + (["torch"] if backend == "executorch" else [])  # its Python runtime imports torch
    try:
        return all(importlib.util.find_spec(m) is not None for m in needs)
    except (ImportError, ValueError):  # a finder that refuses the name (as on a device without torch)
        return False


def choose_backend(bundle: Bundle, backend: str = "auto") -> str:
    """`backend` itself if usable, else (for "auto") the first of AUTO_ORDER whose file and package are here."""
    have = bundle.manifest.backends
    if backend != "auto":
        if backend not in BACKENDS:
            raise BackendUnavailable(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
        if BACKENDS[backend][0] not in have:
            raise BackendUnavailable(f"bundle {bundle.path} has no {BACKENDS[backend][0]} program for backend {backend!r}")
        if not installed(backend):
            raise BackendUnavailable(f"backend {backend!r} is not installed; it needs {PACKAGES[backend]}")
        return backend
    for b in AUTO_ORDER:
        if BACKENDS[b][0] in have and installed(b):
            return b
    raise BackendUnavailable(
        f"no runtime for bundle {bundle.path} (programs: {', '.join(have)}) is installed; install one of: "
        + "; ".join(PACKAGES[b] for b in AUTO_ORDER if BACKENDS[b][0] in have)
    )


class ProgramRunner:
    """Runs named programs; `calls` counts each program's runs (how tests see which encoders ran).

    Each program's inputs are buffers the runner owns (`inputs`): a caller writes a window straight into them and
    calls `invoke`, so no call copies an input it was handed. `invoke` returns the outputs as arrays that stay
    valid only until that program runs again: callers copy what they keep. `run` is the same with copies, for
    callers that hold their inputs elsewhere."""

    backend: str

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def inputs(self, program: str) -> list[np.ndarray]:
        """The program's input buffers, [batch, ...] in each tensor's stored type, in the manifest's order."""
        raise NotImplementedError

    def invoke(self, program: str) -> list[np.ndarray]:
        """Run the program on what its input buffers hold; its outputs, valid until it runs again."""
        raise NotImplementedError

    def run(self, program: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Copy `inputs` into the program's buffers, run it, and return copies of its outputs."""
        for buf, value in zip(self.inputs(program), inputs):
            np.copyto(buf, value, casting="no")
        return [o.copy() for o in self.invoke(program)]


class LiteRTRunner(ProgramRunner):
    """Every program is a signature of one .tflite; each signature's tensors are allocated once.

    The public SignatureRunner resizes and re-allocates on every call, which costs more than these small
    programs; with fixed shapes, invoking the signature's subgraph directly is the same computation without
    that (DESIGN.md, toolchain facts). The public runner allocates first; nothing re-allocates after that, so
    the input and output buffers are numpy views of the interpreter's own tensors, held for the runner's life
    (the public Interpreter refuses to invoke while such views exist only because allocate_tensors would move
    them)."""

    def __init__(self, bundle: Bundle, backend: str = "litert", threads: int | None = 1) -> None:
        super().__init__()
        self.backend = backend
        interp_mod = importlib.import_module(f"{BACKENDS[backend][1]}.interpreter")
        kwargs = {"num_threads": threads} if threads else {}
        try:
            self._interp = interp_mod.Interpreter(model_content=bundle.program_bytes("litert"), **kwargs)
        except ValueError as e:  # a file that passed its checksum but is not a model (a mis-made bundle)
            raise BundleError(f"{bundle.file('litert')} could not be loaded by {backend}: {e}") from e
        self._w = self._interp._interpreter  # noqa: SLF001  (see the class docstring)
        entry = bundle.manifest.backends["litert"]
        self._plans: dict[str, tuple[int, list[np.ndarray], list[np.ndarray]]] = {}
        for program in entry.inputs:
            try:
                runner = self._interp.get_signature_runner(program)
            except ValueError as e:
                raise BundleError(f"{bundle.file('litert')} has no signature {program!r}") from e
            ins, outs = runner.get_input_details(), runner.get_output_details()
            _check_io(bundle.file("litert"), program, entry.inputs[program], ins, "input")
            _check_io(bundle.file("litert"), program, entry.outputs[program], outs, "output")
            runner(**{t.name: np.zeros(t.shape, dtype=t.dtype) for t in entry.inputs[program].values()})
            subgraph = runner._subgraph_index  # noqa: SLF001
            self._plans[program] = (
                subgraph,
                [self._view(ins[t.name]["index"], subgraph) for t in entry.inputs[program].values()],
                [self._view(outs[t.name]["index"], subgraph) for t in entry.outputs[program].values()],
            )

    def _view(self, index: int, subgraph: int) -> np.ndarray:
        return self._w.tensor(self._interp, index, subgraph)

    def inputs(self, program: str) -> list[np.ndarray]:
        return self._plans[program][1]

    def invoke(self, program: str) -> list[np.ndarray]:
        subgraph, _, outs = self._plans[program]
        self._w.Invoke(subgraph)
        self.calls[program] += 1
        return outs


def litert_tensor_io(name: str, details: dict) -> TensorIO:
    """A LiteRT tensor's details (from a signature runner) as a TensorIO: shape, type, scale and zero point."""
    q = details["quantization_parameters"]
    scale, zp = (float(q["scales"][0]), int(q["zero_points"][0])) if len(q["scales"]) else (1.0, 0)
    return TensorIO(name, tuple(int(v) for v in details["shape"]), np.dtype(details["dtype"]).name, scale, zp)


def _check_io(file: Path, program: str, want: dict[str, TensorIO], details: dict, what: str) -> None:
    """The manifest's view of a program's tensors must be what the file holds (shape, type, quantisation)."""
    for canonical, t in want.items():
        if t.name not in details:
            raise BundleError(f"{file}: program {program} has no {what} {t.name!r} (manifest: {canonical})")
        f = litert_tensor_io(t.name, details[t.name])
        if (f.shape != t.shape or f.dtype != t.dtype or not np.isclose(f.scale, t.scale, rtol=1e-6)
                or f.zero_point != t.zero_point):
            raise BundleError(
                f"{file}: program {program}, {what} {t.name!r} is {f.shape} {f.dtype} scale {f.scale} zp "
                f"{f.zero_point} in the file but {t.shape} {t.dtype} scale {t.scale} zp {t.zero_point} in "
                f"{file.parent / MANIFEST}"
            )


class ExecuTorchRunner(ProgramRunner):
    """Every program is a method of one .pte (XNNPACK-delegated); inputs and outputs are float32."""

    def __init__(self, bundle: Bundle, threads: int | None = 1) -> None:
        super().__init__()
        self.backend = "executorch"
        with quiet_stderr() as said:  # ExecuTorch's start-up chatter; what it says about a failure is kept
            try:
                self._open(bundle, threads)
                failure = None
            except BundleError as e:
                failure = e
        if failure is not None:
            detail = "; ".join(said.kept[-3:])
            raise BundleError(str(failure) + (f" (ExecuTorch said: {detail})" if detail else "")) from failure.__cause__

    def _open(self, bundle: Bundle, threads: int | None) -> None:
        import torch  # the ExecuTorch Python runtime exchanges torch tensors

        from executorch.runtime import Runtime

        runtime = Runtime.get()
        if threads:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(threads))  # noqa: SLF001  (XNNPACK's thread pool size)
        file = bundle.file("executorch")
        try:
            program = runtime.load_program(bundle.program_bytes("executorch"))
        except RuntimeError as e:
            raise BundleError(f"{file} could not be loaded by ExecuTorch: {e}") from e
        entry = bundle.manifest.backends["executorch"]
        missing = set(entry.inputs) - set(program.method_names)
        if missing:
            raise BundleError(f"{file} lacks methods {sorted(missing)}")
        self._program = program  # methods point into the program: it must outlive them
        self._methods = {}
        self._buffers: dict[str, list[np.ndarray]] = {}
        self._tensors = {}  # torch views of the buffers, made once: a call hands the same tensors again
        for p in entry.inputs:
            try:
                # The pybind method under the public wrapper, called with clone_outputs=False: the public
                # Method.execute clones every output into a new tensor, which `invoke` need not do (its outputs
                # are valid until the program runs again, and every caller copies what it keeps). 29.5 -> 20.8 us
                # per call of the demo's EDA encoder on the 2-core VM, most of its call overhead.
                self._methods[p] = program.load_method(p)._method  # noqa: SLF001
            except RuntimeError as e:  # e.g. XNNPACK refusing a delegated graph (xnn_status_invalid_parameter)
                raise BundleError(f"{file}: method {p!r} could not be loaded by ExecuTorch: {e}") from e
            self._buffers[p] = [np.zeros(t.shape, dtype=t.dtype) for t in entry.inputs[p].values()]
            self._tensors[p] = [torch.from_numpy(b) for b in self._buffers[p]]

    def inputs(self, program: str) -> list[np.ndarray]:
        return self._buffers[program]

    def invoke(self, program: str) -> list[np.ndarray]:
        out = self._methods[program](self._tensors[program], False)  # clone_outputs=False (see _open)
        self.calls[program] += 1
        return [o.numpy() for o in out]  # views of planned memory that the method's next call reuses


#: Lines ExecuTorch's Python runtime writes to stderr on every start that say nothing about the bundle: torchao
#: failing to load its optional CUDA kernels, a torch deprecation notice, cpuinfo probing files an x86 or VM
#: kernel does not have, and the thread pool's new size. Everything else (an error) still reaches stderr.
STDERR_NOISE = re.compile(
    r"Failed to load \S*torchao/_C\S*\.so|torch/utils/_pytree\.py:\d+\] .*register_constant\(\)"
    r"|^\[cpuinfo_utils\.cpp:\d+\] |^\[threadpool\.cpp:\d+\] Resetting threadpool"
)


class _Said:
    def __init__(self) -> None:
        self.kept: list[str] = []  # the lines written to stderr in the block that were not noise


@contextlib.contextmanager
def quiet_stderr(noise: re.Pattern = STDERR_NOISE) -> Iterator[_Said]:
    """Hold everything written to file descriptor 2 in the block (C++ logging and Python alike), then write back
    every line that is not `noise`, so a real error is still seen (and callers can quote it from `.kept`)."""
    said = _Said()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to redirect (a closed descriptor): nothing to filter
        yield said
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield said
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            said.kept = [line.rstrip("\n") for line in lines if not noise.search(line)]
            if said.kept:
                os.write(2, ("\n".join(said.kept) + "\n").encode())


def open_runner(bundle: Bundle, backend: str = "auto", threads: int | None = 1) -> ProgramRunner:
    backend = choose_backend(bundle, backend)
    if backend == "executorch":
        return ExecuTorchRunner(bundle, threads)
    return LiteRTRunner(bundle, backend, threads)
