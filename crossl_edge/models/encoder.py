"""Per-modality encoder: a small depthwise-separable Conv1d stack with a statistics path, [B, C, T] -> [B, D].

Trained as Conv1d; exported in the equivalent Conv2d form (conv2d_form), which edge backends lower more simply."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crossl_edge.spec import ModalitySpec

#: The band (Hz) of each kind of signal that carries what wearables classify: the energy of body motion sits
#: mostly below 8 Hz (gait harmonics reach further, at little power), a pulse wave's shape below about 8 Hz,
#: skin conductance and temperature below 1 Hz. An ECG's QRS reaches 40 Hz. EMG is listed for its *envelope* (muscle activation), which the front end extracts: the raw
#: carrier (20-100+ Hz at 200 Hz or more) is not kept. Unknown kinds keep everything (stride 1).
BANDWIDTH_HZ = {"imu": 8.0, "acc": 8.0, "gyro": 8.0, "orientation": 2.0, "bvp": 8.0, "eda": 1.0,
                "temp": 0.5, "ecg": 40.0, "emg": 10.0}
#: The EMG front end averages the rectified signal down to about this rate: 5x the envelope's band.
EMG_ENVELOPE_RATE_HZ = 50.0


@dataclass
class EncoderConfig:
    widths: tuple[int, ...] = (16, 32, 48, 64)  # channels after the stem and after each separable block
    kernel: int = 5  # temporal kernel of every conv
    embed_dim: int = 64  # D, the size of one modality's embedding
    min_length: int = 8  # stop striding once the sequence is this short (EDA at 4 Hz has only 40 samples)
    dropout: float = 0.1
    max_stem_stride: int = 4  # caps the stem's stride whatever the rate (keeps the kernel small)
    stats_path: bool = True  # per-channel mean and standard deviation of the input, projected beside the convs
    # "window": the convs see each window standardised per channel, (x - mean) / sqrt(var + floor^2), and the
    # level and spread reach the network through the statistics path alone; "none": the convs see the input as
    # given (checkpoints made before this option load as "none")
    input_norm: str = "window"
    # The floor under each window's standard deviation, so that a flat window is not blown up to unit variance.
    # "relative" (the default): window_std_floor times the channel's median window std over the training windows
    # (set by CroSSLNet.fit_window_floors); "absolute": window_std_floor in normalised units, one value for every
    # channel (checkpoints made before this option load as "absolute", 0.1). Half the typical spread: a typical
    # window still reaches the convs near unit variance, and a float32 rounding of the input is amplified 5x
    # less than at 0.1, where the demo's fp32 .pte drifted 1.9e-3 from PyTorch in its logits (0.5: 4e-4).
    window_floor: str = "relative"
    window_std_floor: float = 0.5

    def __post_init__(self) -> None:
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm {self.input_norm!r}: choose from {', '.join(INPUT_NORMS)}")
        if self.window_floor not in WINDOW_FLOORS:
            raise ValueError(f"window_floor {self.window_floor!r}: choose from {', '.join(WINDOW_FLOORS)}")
        if self.input_norm == "window" and not self.stats_path:
            raise ValueError("input_norm 'window' needs the statistics path: it alone carries each window's level and spread")


INPUT_NORMS = ("window", "none")
WINDOW_FLOORS = ("relative", "absolute")
#: the smallest relative floor (normalised units): a channel that is flat in most windows must not divide by zero
MIN_WINDOW_FLOOR = 1e-4


def envelope_factor(spec: ModalitySpec) -> int:
    """Samples averaged into one envelope sample by the EMG front end (1: no front end)."""
    if spec.kind != "emg":
        return 1
    k = int(spec.sample_rate // EMG_ENVELOPE_RATE_HZ)
    while k > 1 and spec.window % k:  # the envelope must tile the window exactly
        k -= 1
    return max(k, 1)


def stem_stride(rate_hz: float, kind: str, length: int, cfg: EncoderConfig) -> int:
    """The largest power-of-two stride that keeps the rate at or above twice the signal's band (Nyquist),
    capped by cfg.max_stem_stride and by the sequence length (the blocks still need min_length samples)."""
    band = BANDWIDTH_HZ.get(kind)
    stride = 1
    while (
        band is not None
        and stride * 2 <= cfg.max_stem_stride
        and rate_hz / (stride * 2) >= 2 * band
        and length // (stride * 2) >= cfg.min_length
    ):
        stride *= 2
    return stride


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


class EnvelopeFrontEnd(nn.Module):
    """EMG envelope: rectify, then average every `factor` samples: [B, C, T] -> [B, C, T / factor].

    Surface EMG is a zero-mean carrier whose information is its amplitude envelope (the per-window log-RMS
    separates LIS letters with a Fisher ratio of 2.7-10 per channel, the raw mean 0.02-0.09). A strided conv
    on the raw carrier aliases it away. The average is a 4-D mean, the form every edge backend lowers; it stays
    float32 in int8 programs (no weights; the raw carrier's range across windows would cost int8 steps)."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        n = t // self.factor
        return x.abs().reshape(b, c * n, 1, self.factor).mean((2, 3), keepdim=True).reshape(b, c, n)


def window_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, x - mean, variance) over time per channel, the moments as [B, C, 1, 1] and the centred window as
    [B, C, 1, T]: 4-D means, the only mean ExecuTorch's XNNPACK delegate lowers."""
    b, c, t = x.shape
    x4 = x.reshape(b, c, 1, t)
    mean = x4.mean((2, 3), keepdim=True)
    centred = x4 - mean
    return mean, centred, (centred * centred).mean((2, 3), keepdim=True)


def channel_stats(x: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation over time per channel: [B, C, T] -> [B, 2C]."""
    mean, _, var = window_moments(x)
    return _stats(mean, var)


def _stats(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    b, c = mean.shape[:2]
    return torch.cat([mean.reshape(b, c), torch.sqrt(var + 1e-6).reshape(b, c)], dim=1)


class StatisticsPath(nn.Sequential):
    """[B, 2C] per-channel (mean, std) -> [B, D]: a BatchNorm, because the statistics' scales differ by channel
    and kind (a mean near 0, an EMG envelope near 1, a std far below either), then a linear projection.

    Its own class so that int8 export can keep it fp32 (export.programs.FP32_MODULES): it carries the window's
    level, and levels differ between people beyond any calibration range (Stress-Predict skin temperature spans
    27.5-35.2 C across subjects). In int8, held-out subjects' temperature embeddings were clipped to a relative
    error of 0.83 while calibration windows measured 0.02. It is 2C x D weights."""

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__(nn.BatchNorm1d(2 * channels), nn.Linear(2 * channels, embed_dim))


class ModalityEncoder(nn.Module):
    """Encodes one modality's window [B, C, T] into an embedding [B, D].

    - EMG goes through the envelope front end first (see EnvelopeFrontEnd).
    - The stem's stride follows the signal's rate and band (BANDWIDTH_HZ), not its window length.
    - The statistics path projects each channel's mean and standard deviation over the window and adds them
      to the conv features' projection: level and spread are what window statistics + logistic regression
      classify with, and a small conv stack pooled by a mean does not reliably recover the spread.
    - With input_norm "window" (the default) the convs see each window standardised per channel, so they learn
      shape while the statistics path carries level and spread. That is also what makes the convs int8-exact:
      after the training-set standardisation an EDA window's own variation is about one int8 step of the range
      that all windows' levels span (relative embedding error 0.22 from quantising the input alone), while a
      standardised window fills the int8 range whatever its level, provided the floor under its spread sits
      below the channel's own typical spread (window_floor "relative", fit_window_floor).
    """

    def __init__(self, spec: ModalitySpec, cfg: EncoderConfig) -> None:
        super().__init__()
        self.spec = spec
        self.input_norm = cfg.input_norm
        self.window_floor, self.window_std_floor = cfg.window_floor, cfg.window_std_floor
        # [1, C, 1, 1], saved with the weights: the floor is part of the function the network learned
        self.register_buffer("window_floor_sq", torch.full((1, spec.channels, 1, 1), cfg.window_std_floor**2))
        factor = envelope_factor(spec)
        self.front = EnvelopeFrontEnd(spec.channels, factor) if factor > 1 else None
        length = spec.window // factor
        stride = stem_stride(spec.sample_rate / factor, spec.kind, length, cfg)
        stem_kernel = max(cfg.kernel, 2 * stride + 1) | 1  # odd, and wide enough to see every skipped sample
        self.stem = nn.Sequential(
            nn.Conv1d(spec.channels, cfg.widths[0], stem_kernel, stride=stride, padding=stem_kernel // 2, bias=False),
            nn.BatchNorm1d(cfg.widths[0]),
            nn.ReLU(),
        )
        blocks = []
        length = (length + stride - 1) // stride
        for c_in_b, c_out_b in zip(cfg.widths[:-1], cfg.widths[1:]):
            s = 2 if length >= 2 * cfg.min_length else 1
            blocks.append(SeparableBlock(c_in_b, c_out_b, cfg.kernel, s))
            length = (length + s - 1) // s
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.widths[-1], cfg.embed_dim)
        self.stats = StatisticsPath(spec.channels, cfg.embed_dim) if cfg.stats_path else None

    @property
    def conv_rank(self) -> int:
        """1 as trained; 2 in the export form of conv2d_form(), whose convs run on [B, C, 1, T]."""
        return 2 if isinstance(self.stem[0], nn.Conv2d) else 1

    @torch.no_grad()
    def fit_window_floor(self, x: torch.Tensor, chunk: int = 2048) -> None:
        """With window_floor "relative", set each channel's floor from training windows x [N, C, T]:
        window_std_floor times the channel's median window std (after the EMG front end, as the convs see it).

        Why: one floor in normalised units is far above some signals' own variation within a window. On
        Stress-Predict an EDA window's median std is 0.005 normalised units, so under a floor of 0.1 the median
        window reached the convs at a peak of 0.11 while the widest reached 3.9: per-tensor int8 left the typical
        window a few steps (relative embedding error 0.10, the stem kept fp32). Relative to the channel's own
        spread, a typical window comes out near unit variance and only windows far flatter than usual are damped
        (demo model: EDA's int8 error 0.102 -> 0.018 with every conv int8; acc 0.039 -> 0.025)."""
        if self.window_floor != "relative" or self.input_norm != "window":
            return
        stds = []
        for i in range(0, len(x), chunk):
            xi = x[i : i + chunk].to(self.window_floor_sq.device, torch.float32)
            if self.front is not None:
                xi = self.front(xi)
            stds.append(window_moments(xi)[2].sqrt())
        if not stds:
            raise ValueError(f"{self.spec.name}: no windows to set the window-std floor from")
        median = torch.cat(stds).median(dim=0).values  # [C, 1, 1]
        self.window_floor_sq.copy_((self.window_std_floor * median).clamp_min(MIN_WINDOW_FLOOR)[None] ** 2)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before the floor was a buffer were trained with the absolute floor it is initialised to
        state_dict.setdefault(prefix + "window_floor_sq", torch.full_like(self.window_floor_sq, self.window_std_floor**2))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.front is not None:
            x = self.front(x)  # [B, C, T / factor]
        b, c, t = x.shape
        mean, centred, var = window_moments(x)
        conv_in = centred / torch.sqrt(var + self.window_floor_sq) if self.input_norm == "window" else x  # [B, C, 1, T]
        if conv_in.dim() != self.conv_rank + 2:  # a no-op reshape would cost XNNPACK two transposes
            conv_in = conv_in.reshape((b, c, t) if self.conv_rank == 1 else (b, c, 1, t))
        y = self.blocks(self.stem(conv_in))
        if self.conv_rank == 1:  # [B, W, T'] -> [B, W, 1, T']
            y = y.reshape(y.shape[0], y.shape[1], 1, y.shape[2])
        # Pool over time as a 4-D mean: ExecuTorch's XNNPACK delegate lowers only this form (DESIGN.md).
        pooled = y.mean((2, 3), keepdim=True).reshape(b, y.shape[1])  # [B, W]
        out = self.proj(self.dropout(pooled))  # [B, D]
        if self.stats is not None:
            out = out + self.stats(_stats(mean, var))
        return out


def _conv2d(conv: nn.Conv1d) -> nn.Conv2d:
    out = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                    padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]), groups=conv.groups,
                    bias=conv.bias is not None)
    with torch.no_grad():
        out.weight.copy_(conv.weight[:, :, None, :])
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


def _batch_norm2d(bn: nn.BatchNorm1d) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)
    out.load_state_dict(bn.state_dict())
    return out.train(bn.training)


def conv2d_form(encoder: ModalityEncoder) -> ModalityEncoder:
    """A copy of `encoder` that computes the same function with its conv stack as Conv2d (kernel 1 x k) and
    BatchNorm2d over [B, C, 1, T]: the form that edge backends lower without layout changes around each conv.

    Why: ExecuTorch lowers a Conv1d by wrapping it in reshapes to 4-D and, since XNNPACK is channels-last, in
    transposes in and out; on the demo model every encoder's delegate held 21 transposes and 20 reshapes
    around its 8 convs. In 4-D throughout, only the window's entry and the pooling leave the layout."""
    out = copy.deepcopy(encoder)
    for block in [out.stem, *out.blocks]:
        for name, child in list(block.named_children()):
            if isinstance(child, nn.Conv1d):
                setattr(block, name, _conv2d(child))
            elif isinstance(child, nn.BatchNorm1d):
                setattr(block, name, _batch_norm2d(child))
    return out
