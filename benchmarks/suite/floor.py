"""The physical floor of one window: the multiply-accumulates its programs do, read from the .tflite
itself (no torch, so it works on the board too), and the time they take at the CPU's peak.

Counted: CONV_2D (output elements x kernel height x width x input channels per group), DEPTHWISE_CONV_2D
(output elements x kernel height x width), FULLY_CONNECTED and BATCH_MATMUL (output elements x the
reduced length). Element-wise ops, padding, transposes and means are not multiply-accumulates and are
left out, so the floor is a lower bound on the work.
"""

from __future__ import annotations

from math import prod

from crossl_edge.runtime.bundle import AGGREGATE, encoder_program

MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")


def program_macs(tflite: bytes) -> dict[str, int]:
    """Signature name -> multiply-accumulates of one call (batch 1)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(tflite, 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out: dict[str, int] = {}
    for sig in model.signatureDefs:
        graph = model.subgraphs[sig.subgraphIndex]
        shape = lambda i: [int(d) for d in graph.tensors[i].shape]  # noqa: E731
        total = 0
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
            if name not in MAC_OPS:
                continue
            n_out = prod(shape(op.outputs[0]))
            weights = shape(op.inputs[1])
            if name == "CONV_2D":  # filter [Cout, kh, kw, Cin per group]
                total += n_out * prod(weights[1:])
            elif name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, Cout]
                total += n_out * weights[1] * weights[2]
            elif name == "FULLY_CONNECTED":  # weights [out, in]
                total += n_out * weights[-1]
            else:  # BATCH_MATMUL: [..., M, K] x [..., K, N]
                total += n_out * shape(op.inputs[0])[-1]
        key = sig.signatureKey.decode() if isinstance(sig.signatureKey, bytes) else sig.signatureKey
        out[key] = total
    return out


def peak_macs_per_s(machine: dict, threads: int = 1) -> float | None:
    """fp32 multiply-accumulates per second at the clock and SIMD width `machine` reports (see machine.simd)."""
    if not machine.get("clock_ghz"):
        return None
    return machine["clock_ghz"] * 1e9 * machine["fp32_macs_per_cycle"] * threads


def floor_table(macs: dict[str, int], subsets: list[tuple[str, ...]], machine: dict) -> dict[str, dict]:
    """For each subset of sensors present: its MACs per window and their time at one core's peak."""
    peak = peak_macs_per_s(machine)
    rows = {}
    for subset in subsets:
        n = sum(macs[encoder_program(name)] for name in subset) + macs[AGGREGATE]
        rows["+".join(subset)] = {"macs": n, "floor_us": (n / peak * 1e6) if peak else None}
    return rows
