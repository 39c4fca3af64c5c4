"""Where training runs: CUDA with mixed precision when present, the CPU otherwise, DDP under torchrun."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class Placement:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = full precision
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # Only float16 needs loss scaling; bfloat16 has float32's exponent range.
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)


DEVICES = ("auto", "cpu", "cuda")


def place(device: str = "auto", amp: bool = True) -> Placement:
    """Pick the device; under torchrun (WORLD_SIZE > 1) also join the process group, one GPU per rank."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    use_cuda = torch.cuda.is_available() and device != "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        dev = torch.device("cuda", torch.cuda.current_device())
        amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else None
    else:
        dev, amp_dtype = torch.device("cpu"), None  # CPU autocast is slower than fp32 for these small convs
    log.info("training on %s (amp %s, rank %d of %d)", dev, amp_dtype, rank, world)
    return Placement(dev, amp_dtype, rank, world)


def wrap_ddp(module: torch.nn.Module, placement: Placement) -> torch.nn.Module:
    """The module as DDP when running under torchrun, unchanged otherwise."""
    if placement.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [placement.device.index] if placement.device.type == "cuda" else None
    # find_unused_parameters: the classification head rides along in pretraining without gradients.
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def all_reduce_mean(value: float, placement: Placement) -> float:
    if placement.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], device=placement.device)
    dist.all_reduce(t)
    return float(t) / placement.world
