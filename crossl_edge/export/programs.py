"""The network cut into the programs a bundle holds, their example inputs, and calibration data.

One encoder program per modality (x [1, C, T] -> embedding [1, D]) and one aggregator + head program
((z [1, M, D], presence [1, M]) -> (logits [1, K], global embedding [1, G])). Separate programs are what
make skipping the encoders of absent sensors real: the runtime runs only the present ones.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from crossl_edge.models.crossl import CroSSLNet
from crossl_edge.models.encoder import SeparableBlock, StatisticsPath, conv2d_form
from crossl_edge.runtime.bundle import AGGREGATE, encoder_program

log = logging.getLogger(__name__)

#: Canonical input and output names of each kind of program, in argument / return order.
ENCODER_IO = (("x",), ("embedding",))
AGGREGATE_IO = (("z", "presence"), ("logits", "global"))


class EncoderProgram(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class AggregateProgram(nn.Module):
    def __init__(self, net: CroSSLNet) -> None:
        super().__init__()
        self.aggregator = net.aggregator
        self.head = net.head

    def forward(self, z: torch.Tensor, presence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.aggregator.forward_presence(z, presence)
        return self.head(g), g


@dataclass
class Program:
    name: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    calibration: list[tuple[torch.Tensor, ...]]  # batch-1 argument tuples
    io: tuple[tuple[str, ...], tuple[str, ...]]  # canonical (input names, output names)
    int8_plans: tuple[tuple[type, ...], ...]  # module types to quantise to int8, most aggressive first


# What is int8 and what stays fp32. Every conv and linear layer of an encoder's conv path is int8 (plan 1): its
# convs see each window standardised (EncoderConfig.input_norm "window"), which fills the int8 range whatever
# the window's level. Before that, with the training-set standardisation alone, quantising the input cost
# EDA and BVP a relative embedding error of 0.22 and EDA's convs 0.34, so the first conv stayed fp32. What
# stays fp32 has few weights or none: the window's moments and standardisation, the EMG envelope (a mean),
# the statistics path (FP32_MODULES: it carries levels that differ between people beyond any calibration
# range), and the aggregator's layer norm and mask blend (in int8 they cut argmax agreement with fp32 to 0.93). An encoder falls back to the next plan where its calibration error exceeds
# ENCODER_INT8_TOL (a model trained with input_norm "none", say) or its backend refuses the program.
# Encoders are lowered in their Conv2d form (conv2d_form: [B, C, 1, T], no layout change around each conv; the
# demo .pte 196 -> 180 KB before compaction, ExecuTorch's encoders 8% faster), so the plans name Conv2d.
# The conv plan names BatchNorm2d and ReLU too: without them the filter cuts the conv-bn-relu pattern, the ReLU is
# quantised as its own op and LiteRT can fuse nothing (each conv then paid two transposes, two reshapes and a ReLU
# on int8 tensors: the int8 encoders ran 2-5x slower than fp32; demo model, programs 131 -> 36 us per window).
ENCODER_INT8_PLANS = ((nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear), (SeparableBlock, nn.Linear), (nn.Linear,))  # tried in order
# Never int8, whatever the plan: see StatisticsPath.
FP32_MODULES = (StatisticsPath,)
AGGREGATE_INT8_PLANS = ((nn.Linear,),)
ENCODER_INT8_TOL = 0.10


def in_modules(node, types: tuple[type, ...]) -> bool:
    """Whether an exported graph node was traced inside a module of one of `types` and of none of
    FP32_MODULES (by class name: torch's export metadata holds the class or its qualified name depending on
    the version)."""
    if node.op != "call_function":
        return True  # weights and constants (BatchNorm-folded ones carry no module stack) go with their op
    stack = {getattr(t, "__qualname__", str(t).rsplit(".", 1)[-1].strip("'>"))
             for _, t in node.meta.get("nn_module_stack", {}).values()}
    return bool(stack & {t.__qualname__ for t in types}) and not stack & {t.__qualname__ for t in FP32_MODULES}


def presence_patterns(n_modalities: int, n: int, rng: np.random.Generator, all_present: float = 0.5) -> np.ndarray:
    """[n, M] 0/1 presence masks as the runtime sends them: all present for about half the rows, a random
    non-empty subset for the rest (the aggregator's int8 ranges must cover absent sensors too)."""
    keep = np.ones((n, n_modalities), dtype=np.float32)
    for i in np.flatnonzero(rng.random(n) >= all_present):
        k = rng.integers(1, n_modalities + 1)
        keep[i] = 0.0
        keep[i, rng.choice(n_modalities, size=k, replace=False)] = 1.0
    return keep


def build_programs(net: CroSSLNet, windows: dict[str, np.ndarray], seed: int = 0) -> list[Program]:
    """Programs of `net` with calibration data from normalised windows {name: [N, C, T]} (training windows).

    The aggregator is calibrated on the fp32 encoders' embeddings of the same windows, absent rows zeroed
    as the runtime sends them."""
    net = net.eval().cpu()
    rng = np.random.default_rng(seed)
    programs = []
    with torch.no_grad():
        z = []
        for s in net.specs:
            x = torch.from_numpy(np.ascontiguousarray(windows[s.name], dtype=np.float32))
            programs.append(Program(encoder_program(s.name), EncoderProgram(conv2d_form(net.encoders[s.name])).eval(),
                                    (x[:1].clone(),), [(x[i : i + 1],) for i in range(len(x))], ENCODER_IO,
                                    ENCODER_INT8_PLANS))
            z.append(net.encoders[s.name](x))
        zs = torch.stack(z, dim=1)  # [N, M, D]
        keep = torch.from_numpy(presence_patterns(len(net.specs), len(zs), rng))
        zs = zs * keep[:, :, None]
    programs.append(Program(AGGREGATE, AggregateProgram(net).eval(), (zs[:1].clone(), keep[:1].clone()),
                            [(zs[i : i + 1], keep[i : i + 1]) for i in range(len(zs))], AGGREGATE_IO,
                            AGGREGATE_INT8_PLANS))
    return programs


def statistics_batch_norm_folded(module: nn.Module) -> nn.Module:
    """A copy of `module` whose StatisticsPath batch norms are folded into the linear layer after them (exact
    in eval mode: the norm is an affine map per feature).

    Why: PT2E folds every batch norm that follows a conv at prepare time, but one that follows anything else
    stays in the graph, and then convert_pt2e runs its QAT conv-bn folding pass, which traces and matches 16
    patterns per program: 85% of a 7-encoder int8 export's time (423 of 571 s under a profiler), for a pass
    that finds nothing in a post-training-quantised graph. Without a batch norm left it returns at once."""
    module = copy.deepcopy(module)
    for path in [m for m in module.modules() if isinstance(m, StatisticsPath)]:
        bn, linear = path[0], path[1]
        if not isinstance(bn, nn.BatchNorm1d):
            continue
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            linear.bias.add_(linear.weight @ shift)
            linear.weight.mul_(scale[None, :])
        path[0] = nn.Identity()
    return module


def _pt2e(program: Program, quantizer, fold_quantize: bool) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = statistics_batch_norm_folded(program.module)
    prepared = prepare_pt2e(torch.export.export(module, program.example).module(), quantizer)
    with torch.no_grad():
        for args in program.calibration:
            prepared(*args)
    converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    if not any("quantize_per" in str(n.target) for n in converted.graph.nodes):
        # a quantizer whose filters match nothing leaves the program fp32 without a word: refuse that
        raise RuntimeError(f"{program.name}: the int8 quantizer annotated no operation")
    return converted


def _first_output(out):
    return out[0] if isinstance(out, tuple) else out


def relative_error(quantized: nn.Module, program: Program, n: int = 256) -> float:
    """||q(x) - f(x)|| / ||f(x)|| of the (first) output over up to n calibration inputs."""
    diff = ref = 0.0
    with torch.no_grad():
        for args in program.calibration[:n]:
            f, q = _first_output(program.module(*args)), _first_output(quantized(*args))
            diff += float(((q - f) ** 2).sum())
            ref += float((f**2).sum())
    return (diff / max(ref, 1e-24)) ** 0.5


def fp32_convs(module: nn.Module) -> int:
    """How many convolutions of a converted PT2E graph take a float weight (one not produced by a dequantize):
    a plan can name Conv1d and still leave every conv fp32 when its filter cuts the conv's fused pattern."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return sum(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in module.modules())
    return sum(1 for n in graph.nodes if n.op == "call_function" and "conv" in str(n.target)
               and len(n.args) > 1 and "dequantize" not in str(getattr(n.args[1], "target", "")))


def quantize(
    program: Program, make_quantizer: Callable, fold_quantize: bool = True, tolerance: float = ENCODER_INT8_TOL,
    plans: tuple[tuple[type, ...], ...] | None = None, refusal: Callable[[nn.Module], str | None] | None = None,
) -> tuple[nn.Module, dict]:
    """PT2E post-training int8 of one program, with the first of its int8 plans (or `plans`) whose calibration
    error is within `tolerance` (else the last plan) and that the backend accepts: `refusal(module)` says why
    the backend cannot lower or load it, or None. `make_quantizer(types)` gives the backend's quantizer that
    annotates only modules of those types. Returns the module and what was chosen, for the manifest.

    If the backend refuses every plan, the program stays fp32 (chosen: {"int8": []}) and the manifest says why:
    an export never fails because one program would not quantise."""
    from torchao.quantization.pt2e import move_exported_model_to_eval

    tried = []
    plans = plans or program.int8_plans
    for i, types in enumerate(plans):
        q = move_exported_model_to_eval(_pt2e(program, make_quantizer(types), fold_quantize))
        for module in q.modules():  # the flag litert-torch checks; exported graphs refuse .eval() itself
            module.training = False
        err = relative_error(q, program)
        names = [t.__name__ for t in types]
        tried.append({"int8": names, "calibration_rel_error": round(err, 4), "fp32_convs": fp32_convs(q)})
        log.info("  %s: int8 %s, relative error %.3f on calibration windows", program.name, "+".join(names), err)
        if err > tolerance and i < len(plans) - 1:
            continue
        why = refusal(q) if refusal is not None else None
        if why is None:
            return q, {"chosen": tried[-1], "tried": tried}
        tried[-1]["refused"] = why
        log.warning("  %s: int8 %s refused by the backend (%s); trying the next plan", program.name,
                    "+".join(names), why)
    log.warning("  %s: the backend refused every int8 plan; this program stays fp32", program.name)
    return program.module, {"chosen": {"int8": [], "calibration_rel_error": 0.0, "fp32_convs": fp32_convs(program.module)},
                            "tried": tried}
