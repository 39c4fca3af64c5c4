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
        else was int8. Here a cat outside the filter stays fp32, with what its annotation propagated to.

        The conv + batch-norm patterns are left out: XNNPACK annotates them for QAT only (its own comment: in PTQ
        the batch norm is already fused into the conv, which prepare_pt2e does before annotating), yet its
        static config runs them too, and each run exports a dozen pattern graphs: 5 s per program, 40 of the 95 s
        an 8-program ExecuTorch int8 export took (cProfile), for no match. Programs here are quantised PTQ only."""

        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if not p.is_qat]

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
    config = get_symmetric_quantization_config(is_per_channel=True)  # PTQ (is_qat False): see SUPPORTED_PATTERNS
    return FilteredXNNPACKQuantizer().set_global(config).set_filter_function(keep)


# XNNPACK (ExecuTorch 1.4.1 and 1.5.1) refuses int8 separable convs behind an fp32 stem at load time
# ("Failed to create convolution node ... xnn_status_invalid_parameter"), so the middle plan of
# programs.ENCODER_INT8_PLANS is never tried here: all convs int8, else the projections alone. The first plan
# names the batch norms and ReLUs: without them the filter cuts XNNPACK's conv-bn-relu pattern and every conv stays
# fp32 with nothing said (until 2026-12-05 the .pte held 104 KB of fp32 conv weights under a plan named Conv1d).
# The programs lower encoders in their Conv2d form (models.encoder.conv2d_form), hence Conv2d and BatchNorm2d.
ENCODER_PLANS = ((nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear), (nn.Linear,))


def _lower(exported: dict):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    _check_fully_delegated(edge, list(exported))
    return compact(edge.to_executorch().buffer)


#: Start of each segment (delegate blob) in the .pte. ExecuTorch's default is 128; XNNPACK copies (packs) every
#: weight at load, so it never reads them in place, and 16 keeps float and int32 data aligned.
SEGMENT_ALIGNMENT = 16
#: Start of each weight inside a delegate's constant section (what XNNPACK's own serializer uses).
CONSTANT_ALIGNMENT = 16
XNNPACK = "XnnpackBackend"


def compact(data: bytes) -> bytes:
    """The same program in fewer bytes: every named weight moved into the constant section of the XNNPACK
    delegate that loads it, and segments aligned to SEGMENT_ALIGNMENT.

    XNNPACK writes each weight, scale and bias as a named segment of the .pte, keyed by the sha256 of its bytes
    (64 characters, stored twice: in the program's named-data table and in the delegate graph), each with an
    entry in the segment table too: 148 of them in the demo model. A delegate graph can instead point at its
    constants by offset inside its own blob, which XNNPACK's runtime reads as well (an entry without a name).
    The demo .pte went from 179,592 bytes as ExecuTorch writes it to 144,752; renaming the weights to short
    indices, the compaction until 2026-12-07, reached 153,848. The delegate graphs are XNNPACK flatbuffers,
    rewritten by ExecuTorch's own schema and flatc. The bundle is verified on the compacted bytes, like any other."""
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary

    pte = deserialize_pte_binary(data)
    blobs = {d.processed.index: d.id for plan in pte.program.execution_plan for d in plan.delegates}
    # moved only where XNNPACK alone refers to them (another delegate's format is not known here)
    if pte.named_data is not None and pte.named_data.pte_data and set(blobs.values()) == {XNNPACK}:
        nd = pte.named_data
        weights = {k: bytes(nd.buffers[v.buffer_index]) for k, v in nd.pte_data.items()}
        moved: set[str] = set()
        for index in blobs:
            entry = pte.program.backend_delegate_data[index]
            entry.data = _xnnpack_blob_with_inline_weights(entry.data, weights, moved)
        # named data that no XNNPACK graph refers to (none in the programs made here) stays where it was
        nd.pte_data = {k: v for k, v in nd.pte_data.items() if k not in moved}
        if not nd.pte_data:
            pte.named_data = None
    return bytes(serialize_pte_binary(pte, extract_delegate_segments=True, segment_alignment=SEGMENT_ALIGNMENT))


def _xnnpack_blob_with_inline_weights(blob: bytes, weights: dict[str, bytes], moved: set[str]) -> bytes:
    """An XNNPACK delegate blob (header, flatbuffer graph, constants) whose named constants are appended to its
    own constant section and referred to by offset; their names are added to `moved`. A weight used twice by one
    graph is stored once; one that two graphs share (identical bytes, e.g. equal biases in two programs) is stored
    in each, which the measured total above already pays."""
    import importlib.resources
    import json
    import re
    import tempfile
    from pathlib import Path

    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_compile, _flatc_decompile

    import executorch.backends.xnnpack.serialization as xnn_serialization

    header = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
    if not header.is_valid():
        raise ValueError("ExecuTorch program: an XNNPACK delegate blob has an invalid header")
    graph = blob[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size]
    constants = bytearray(blob[header.constant_data_offset : header.constant_data_offset + header.constant_data_size])
    with tempfile.TemporaryDirectory() as d:
        schema = Path(d) / "schema.fbs"
        # flatc writes floats to JSON with 6 decimals, which would round every scale: read and write them as
        # their bits instead (every float field of the schema defaults to 0.0, whose bits are 0)
        text = importlib.resources.files(xnn_serialization).joinpath("schema.fbs").read_text()
        if re.search(r"\bfloat\s*=", text):
            raise ValueError("XNNPACK's schema gives a float field a default; its bits would not round-trip")
        schema.write_text(re.sub(r"(:\s*\[?)float\b", r"\1uint", text))
        (Path(d) / "graph.bin").write_bytes(graph)
        _flatc_decompile(d, str(schema), str(Path(d) / "graph.bin"), ["--raw-binary"])
        tree = json.loads((Path(d) / "graph.json").read_text())
        placed: dict[str, int] = {}
        for entry in tree.get("constant_data", []):
            key = entry.pop("named_key", "")
            if not key:
                continue
            if key not in weights:
                raise ValueError(f"ExecuTorch program: an XNNPACK graph names weight {key!r}, which the file lacks")
            if entry.get("size", 0) > len(weights[key]):
                raise ValueError(f"ExecuTorch program: XNNPACK weight {key!r} is shorter than its graph says")
            if key not in placed:
                constants += bytes(-len(constants) % CONSTANT_ALIGNMENT)
                placed[key] = len(constants)
                constants += weights[key]
            entry["offset"] = placed[key]
            moved.add(key)
        (Path(d) / "graph.json").write_text(json.dumps(tree))
        _flatc_compile(d, str(schema), str(Path(d) / "graph.json"))
        graph = (Path(d) / "graph.bin").read_bytes()
    # the layout XNNPACK's serializer writes: header, graph and constants, each start 16-byte aligned
    pad = lambda b: b + bytes(-len(b) % 16)  # noqa: E731
    head_len = len(pad(bytes(XNNHeader.EXPECTED_LENGTH)))
    head = XNNHeader(head_len, len(graph), head_len + len(pad(graph)), len(constants)).to_bytes()
    return pad(head) + pad(graph) + bytes(constants)


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
