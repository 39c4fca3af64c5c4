"""LiteRT (TFLite): every program becomes a signature of one .tflite, through litert-torch.

int8 is full-integer PT2E quantisation (litert-torch's own quantizer): the encoders take int8 windows
and the aggregator int8 embeddings and presence, so the runtime quantises inputs and dequantises outputs
with the scale and zero point of each tensor, which are read back from the converted file and recorded
in the manifest under the program's canonical tensor names.
"""

from __future__ import annotations

import numpy as np

from crossl_edge.export.programs import ENCODER_INT8_TOL, Program, in_modules, quantize
from crossl_edge.runtime.backends import litert_tensor_io


def _module_quantizer(types: tuple[type, ...]):
    """litert-torch's quantizer, annotating only nodes inside modules of `types`.

    Its own set_module_type/set_module_name filters match nothing under torch 2.13 (they expect an older
    layout of the export's module-stack metadata), which silently leaves the whole program fp32; so the
    annotation runs its static patterns with our filter instead."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.pt2e_quantizer_utils import propagate_annotation

    class ModuleQuantizer(PT2EQuantizer):
        def annotate(self, model):
            config = get_symmetric_quantization_config(is_per_channel=True)
            self._annotate_all_static_patterns(model, config, lambda n: in_modules(n, types))  # noqa: SLF001
            propagate_annotation(model)
            return model

    return ModuleQuantizer()


def build(
    programs: list[Program], int8: bool, tolerance: float = ENCODER_INT8_TOL
) -> tuple[bytes, dict[str, dict], dict[str, dict], dict[str, dict]]:
    """(.tflite bytes, inputs, outputs, int8 choices): I/O per program, canonical name -> TensorIO of the
    signature tensor."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    litert_torch.config.show_progress = False  # its per-pass timing lines drown the export's own report
    converter = None
    choices = {}
    for p in programs:
        module = p.module
        if int8:
            module, choices[p.name] = quantize(p, _module_quantizer, fold_quantize=False, tolerance=tolerance)
        converter = (litert_torch if converter is None else converter).signature(p.name, module, p.example)
    # QuantConfig only tells the converter which q/dq lowering to use (static here): it reads the mode off a
    # quantizer's global config, while ours annotate per module, so it gets one that says "static".
    static = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    model = converter.convert(quant_config=QuantConfig(pt2e_quantizer=static) if int8 else None)
    data = compact(model.model_content())
    return (data, *describe(data, programs), choices)


def compact(data: bytes) -> bytes:
    """The same model in fewer bytes: what the interpreter never reads is dropped, and identical quantisation
    parameters are written once.

    - Tensor names: litert-torch names every tensor after its full Python module path (about 35 KB of the int8
      Stress-Predict model's 200 KB). The interpreter finds tensors by index; signature inputs and outputs keep
      their own names (they live in the signature definitions).
    - Per-channel quantisation parameters: a zero point is an int64 per output channel and is 0 for every
      weight and bias, so the zero-point vectors alone were 24 of the demo model's 160 KB. A flatbuffer may point
      to one table or vector from many places (the builder writes back to front, so an earlier one is always
      reachable), and the reader cannot tell a shared one from a copy: each distinct vector and table is written
      once. Float tensors lose their empty quantisation tables.

    The bundle is verified on the compacted bytes, against the fp32 model, like any other."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    shared = _shared_quantization_class(schema)
    for g in model.subgraphs:
        for t in g.tensors:
            t.name = None
            q = t.quantization
            if q is None or all(getattr(q, f) is None for f in ("min", "max", "scale", "zeroPoint", "details")):
                t.quantization = None
            elif q.details is None:  # a custom quantisation (none here) would pack as generated
                q.__class__ = shared
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _shared_quantization_class(schema) -> type:
    """QuantizationParametersT that packs one table per distinct content and one vector per distinct content,
    within one builder (a new class, so new caches, per model)."""
    tables: dict = {}
    vectors: dict = {}

    def vector(builder, arr: np.ndarray | None):
        if arr is None:
            return None
        key = (arr.dtype.str, arr.tobytes())
        if key not in vectors:
            vectors[key] = builder.CreateNumpyVector(arr)
        return vectors[key]

    class SharedQuantization(schema.QuantizationParametersT):
        def Pack(self, builder):  # noqa: N802  (the generated API's name)
            fields = ((self.min, np.float32, schema.QuantizationParametersAddMin),
                      (self.max, np.float32, schema.QuantizationParametersAddMax),
                      (self.scale, np.float32, schema.QuantizationParametersAddScale),
                      (self.zeroPoint, np.int64, schema.QuantizationParametersAddZeroPoint))
            arrays = [None if v is None else np.ascontiguousarray(v, dtype=d) for v, d, _ in fields]
            key = (tuple(None if a is None else a.tobytes() for a in arrays), self.quantizedDimension)
            if key not in tables:
                offsets = [(add, vector(builder, a)) for a, (_, _, add) in zip(arrays, fields)]
                schema.QuantizationParametersStart(builder)
                for add, offset in offsets:
                    if offset is not None:
                        add(builder, offset)
                schema.QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
                tables[key] = schema.QuantizationParametersEnd(builder)
            return tables[key]

    return SharedQuantization


def describe(data: bytes, programs: list[Program]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Map each program's canonical input/output names to the signature's tensors.

    litert-torch names signature inputs after the traced arguments (args_0, args_1, ...) and outputs
    output_0, output_1, ... in return order; both are sorted by their number, never by position in the
    signature's dict (that order is not guaranteed)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    inputs, outputs = {}, {}
    for p in programs:
        runner = interp.get_signature_runner(p.name)
        for canon, details, store in ((p.io[0], runner.get_input_details(), inputs),
                                      (p.io[1], runner.get_output_details(), outputs)):
            names = sorted(details, key=lambda n: int(n.rsplit("_", 1)[-1]))
            if len(names) != len(canon):
                raise RuntimeError(f"LiteRT signature {p.name}: tensors {names}, expected {len(canon)}")
            store[p.name] = {c: litert_tensor_io(n, details[n]) for c, n in zip(canon, names)}
    return inputs, outputs

