"""ExecuTorch: every program becomes a method of one .pte, lowered to XNNPACK (int8 by PT2E or fp32).

One file with several methods rather than one file per program: the bundle has one file per backend to
checksum and copy, one program load at start-up, and it measured as fast and as small as separate files
(DESIGN.md). ExecuTorch programs keep float32 inputs and outputs; quantisation happens inside.
"""

from __future__ import annotations

import torch
from torch import nn

from crossl_edge.export.programs import ENCODER_INT8_TOL, Program, in_modules, quantize
from crossl_edge.runtime.bundle import AGGREGATE, TensorIO


def _quantizer(types: tuple[type, ...]):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    # by filter, not set_module_type: its type filter also rejects the BatchNorm-folded conv weights
    # (they carry no module stack), which silently leaves every conv fp32
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)).set_filter_function(
        lambda n: in_modules(n, types)
    )


# XNNPACK in ExecuTorch 1.4.1 refuses the int8 separable convs at load time ("Failed to create convolution
# node ... xnn_status_invalid_parameter", measured on the ACC encoder), so here only the encoders' projections
# are int8; LiteRT runs them (see programs.ENCODER_INT8_PLANS).
ENCODER_PLANS = ((nn.Linear,),)


def build(
    programs: list[Program], int8: bool, tolerance: float = ENCODER_INT8_TOL
) -> tuple[bytes, dict[str, dict], dict[str, dict], dict[str, dict]]:
    """(.pte bytes, inputs, outputs, int8 choices): I/O per program, canonical name -> TensorIO (by position)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported, choices = {}, {}
    for p in programs:
        module = p.module
        if int8:
            plans = None if p.name == AGGREGATE else ENCODER_PLANS
            module, choices[p.name] = quantize(p, _quantizer, tolerance=tolerance, plans=plans)
        exported[p.name] = torch.export.export(module, p.example)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    _check_fully_delegated(edge, list(exported))
    data = edge.to_executorch().buffer
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
