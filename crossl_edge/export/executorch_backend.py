"""ExecuTorch: every program becomes a method of one .pte, lowered to XNNPACK (int8 by PT2E or fp32).

One file with several methods rather than one file per program: the bundle has one file per backend to
checksum and copy, one program load at start-up, and it measured as fast and as small as separate files
(DESIGN.md). ExecuTorch programs keep float32 inputs and outputs; quantisation happens inside.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from crossl_edge.export.programs import ENCODER_INT8_TOL, Program, in_modules, quantize
from crossl_edge.runtime.bundle import AGGREGATE, TensorIO

log = logging.getLogger(__name__)


def _quantizer(types: tuple[type, ...]):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import _is_share_obs_or_fq_op
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    keep = lambda n: in_modules(n, types)  # noqa: E731

    class FilteredXNNPACKQuantizer(XNNPACKQuantizer):
        """XNNPACK's cat annotator ignores the filter: it quantised the [mean, std] that an encoder's statistics
        path concatenates *before* its BatchNorm, at the scale of the means, which rounded a temperature window's
        spread (about 0.006) to zero or one step: relative embedding error 0.58 (0.84-0.87 before), whatever
        else was int8. Here a cat outside the filter stays fp32, with what its annotation propagated to."""

        def annotate(self, model):
            model = super().annotate(model)
            stripped = set()
            for n in model.graph.nodes:
                ann = n.meta.get(Q_ANNOTATION_KEY)
                if ann is None or n.op != "call_function":
                    continue
                shared_from_stripped = (_is_share_obs_or_fq_op(n.target) and isinstance(ann.output_qspec, SharedQuantizationSpec)
                                        and n.args and n.args[0] in stripped)
                if (n.target == torch.ops.aten.cat.default and not keep(n)) or shared_from_stripped:
                    del n.meta[Q_ANNOTATION_KEY]
                    stripped.add(n)
            return model

    # by filter, not set_module_type: its type filter also rejects the BatchNorm-folded conv weights
    # (they carry no module stack), which silently leaves every conv fp32
    return FilteredXNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)).set_filter_function(keep)


# XNNPACK (ExecuTorch 1.4.1 and 1.5.1) refuses int8 separable convs behind an fp32 stem at load time
# ("Failed to create convolution node ... xnn_status_invalid_parameter"), so the middle plan of
# programs.ENCODER_INT8_PLANS is never tried here: all convs int8, else the projections alone. The first plan
# names BatchNorm1d and ReLU: without them the filter cuts XNNPACK's conv-bn-relu pattern and every conv stays
# fp32 with nothing said (until 2026-12-05 the .pte held 104 KB of fp32 conv weights under a plan named Conv1d).
ENCODER_PLANS = ((nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.Linear), (nn.Linear,))


def _lower(exported: dict):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    _check_fully_delegated(edge, list(exported))
    return edge.to_executorch().buffer


def _why(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _refusals(data: bytes, programs: list[Program]) -> dict[str, str]:
    """{program: why} for every method of `data` that ExecuTorch's runtime cannot load, or run on its example.
    XNNPACK rejects some int8 graphs only when the method is loaded, so lowering alone proves nothing."""
    from executorch.runtime import Runtime

    from crossl_edge.runtime.backends import quiet_stderr

    out = {}
    with quiet_stderr():
        try:
            loaded = Runtime.get().load_program(data)
        except Exception as e:  # noqa: BLE001  (whatever the runtime raises, the program is refused)
            return {p.name: _why(e) for p in programs}
        for p in programs:
            try:
                loaded.load_method(p.name).execute(list(p.example))
            except Exception as e:  # noqa: BLE001
                out[p.name] = _why(e)
    return out


def refusal(program: Program):
    """A check for quantize(): lower the program alone and load and run it; what went wrong, or None."""

    def check(module: nn.Module) -> str | None:
        try:
            data = _lower({program.name: torch.export.export(module, program.example)})
        except Exception as e:  # noqa: BLE001  (a lowering that fails means: not this plan)
            return _why(e)
        return _refusals(data, [program]).get(program.name)

    return check


def build(
    programs: list[Program], int8: bool, tolerance: float = ENCODER_INT8_TOL
) -> tuple[bytes, dict[str, dict], dict[str, dict], dict[str, dict]]:
    """(.pte bytes, inputs, outputs, int8 choices): I/O per program, canonical name -> TensorIO (by position).

    int8: every program gets its first plan within tolerance and all are lowered together; only if ExecuTorch
    then refuses a method (or the lowering fails) are the refused programs' plans tried one program at a time,
    each lowered and loaded alone, down to fp32 (see programs.quantize). Checking every program alone first
    would double the lowering time of every export for a refusal that the default plans do not meet."""
    plans = {p.name: None if p.name == AGGREGATE else ENCODER_PLANS for p in programs}
    modules, choices = {p.name: p.module for p in programs}, {}
    if int8:
        for p in programs:
            modules[p.name], choices[p.name] = quantize(p, _quantizer, tolerance=tolerance, plans=plans[p.name])

    def lower() -> bytes:
        return _lower({p.name: torch.export.export(modules[p.name], p.example) for p in programs})

    if int8:
        try:
            data = lower()
            refused = _refusals(data, programs)
        except Exception as e:  # noqa: BLE001  (which program failed is found below, one at a time)
            refused = {p.name: _why(e) for p in programs}
        for p in programs:
            if p.name in refused:
                log.warning("  %s: ExecuTorch refused the int8 program with the others (%s); checking its plans "
                            "one at a time", p.name, refused[p.name])
                modules[p.name], choices[p.name] = quantize(p, _quantizer, tolerance=tolerance, plans=plans[p.name],
                                                            refusal=refusal(p))
        if refused:
            data = lower()
    else:
        data = lower()
    inputs, outputs = {}, {}
    for p in programs:
        with torch.no_grad():
            out = p.module(*p.example)
        out = out if isinstance(out, tuple) else (out,)
        inputs[p.name] = {n: TensorIO(str(i), tuple(t.shape), "float32") for i, (n, t) in enumerate(zip(p.io[0], p.example))}
        outputs[p.name] = {n: TensorIO(str(i), tuple(t.shape), "float32") for i, (n, t) in enumerate(zip(p.io[1], out))}
    return data, inputs, outputs, choices


def _check_fully_delegated(edge, names: list[str]) -> None:
    """Every compute op must run inside XNNPACK: an op left to the portable kernels is slow on a Pi, and a
    quantize/dequantize pair left outside means the int8 graph did not lower as intended."""
    allowed = {"executorch_call_delegate", "getitem"}
    for name in names:
        gm = edge.exported_program(name).graph_module
        left = sorted({str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target)
                       for n in gm.graph.nodes if n.op == "call_function" and getattr(n.target, "__name__", str(n.target)) not in allowed})
        if left:
            raise RuntimeError(f"ExecuTorch method {name}: ops not delegated to XNNPACK: {left}")
