"""Per-modality encoder: a small depthwise-separable Conv1d stack, [B, C, T] -> [B, D]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crossl_edge.spec import ModalitySpec


@dataclass
class EncoderConfig:
    widths: tuple[int, ...] = (16, 32, 48, 64)  # channels after the stem and after each separable block
    kernel: int = 5  # temporal kernel of every conv
    embed_dim: int = 64  # D, the size of one modality's embedding
    min_length: int = 8  # stop striding once the sequence is this short (EDA at 4 Hz has only 40 samples)
    dropout: float = 0.1


class SeparableBlock(nn.Module):
    """Depthwise conv (per channel, in time) then pointwise conv (across channels): ~k*C + C*C' weights."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(c_in, c_in, kernel, stride=stride, padding=kernel // 2, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm1d(c_in)
        self.pointwise = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.depthwise(x)))
        return self.act(self.bn2(self.pointwise(x)))


class ModalityEncoder(nn.Module):
    """Encodes one modality's window [B, C, T] into an embedding [B, D].

    EMG gets its rectified signal as extra channels: raw surface EMG is a zero-mean carrier whose
    information is in its envelope, which a small conv net struggles to learn on its own
    (see the LIS EMG-IMU SOURCE.md).
    """

    def __init__(self, spec: ModalitySpec, cfg: EncoderConfig) -> None:
        super().__init__()
        self.spec = spec
        self.rectify = spec.kind == "emg"
        c_in = spec.channels * (2 if self.rectify else 1)
        # A long input (ACC at 32 Hz, BVP at 64 Hz: 320-640 samples) is strided in the stem: most of the
        # encoder's cost is at full rate, and these signals carry little above a few Hz.
        stem_stride = 4 if spec.window >= 32 * cfg.min_length else 2 if spec.window >= 8 * cfg.min_length else 1
        stem_kernel = max(cfg.kernel, 2 * stem_stride + 1) | 1  # odd, and wide enough to see every skipped sample
        self.stem = nn.Sequential(
            nn.Conv1d(c_in, cfg.widths[0], stem_kernel, stride=stem_stride, padding=stem_kernel // 2, bias=False),
            nn.BatchNorm1d(cfg.widths[0]),
            nn.ReLU(),
        )
        blocks = []
        length = (spec.window + stem_stride - 1) // stem_stride
        for c_in_b, c_out_b in zip(cfg.widths[:-1], cfg.widths[1:]):
            stride = 2 if length >= 2 * cfg.min_length else 1
            blocks.append(SeparableBlock(c_in_b, c_out_b, cfg.kernel, stride))
            length = (length + stride - 1) // stride
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.widths[-1], cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rectify:
            x = torch.cat([x, x.abs()], dim=1)  # [B, 2C, T]
        y = self.blocks(self.stem(x))  # [B, W, T']
        b, c, t = y.shape
        # Pool over time as a 4-D mean: ExecuTorch's XNNPACK delegate lowers only this form (DESIGN.md).
        pooled = y.reshape(b, c, 1, t).mean((2, 3), keepdim=True).reshape(b, c)  # [B, W]
        return self.proj(self.dropout(pooled))  # [B, D]
