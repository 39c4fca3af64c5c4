"""The whole network: one encoder per modality, the presence-aware aggregator and a classification head."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from crossl_edge.models.aggregator import AggregatorConfig, PresenceAggregator
from crossl_edge.models.encoder import EncoderConfig, ModalityEncoder
from crossl_edge.spec import ModalitySpec, check_specs


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        enc = dict(d.get("encoder", {}))
        if "widths" in enc:
            enc["widths"] = tuple(enc["widths"])
        if enc:  # a checkpoint from before input_norm existed: its convs saw the input as given
            enc.setdefault("input_norm", "none")
            if "window_floor" not in enc:  # ... and from before window_floor: one floor for all, 0.1 normalised units
                enc.update(window_floor="absolute", window_std_floor=enc.get("window_std_floor", 0.1))
        return cls(encoder=EncoderConfig(**enc), aggregator=AggregatorConfig(**d.get("aggregator", {})))


class CroSSLNet(nn.Module):
    """Encoders + aggregator + head. Modalities are ordered as in `specs`; that order is the M axis."""

    def __init__(self, specs: tuple[ModalitySpec, ...], n_classes: int, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.specs = check_specs(specs)
        self.cfg = cfg or ModelConfig()
        self.names = tuple(s.name for s in self.specs)
        self.encoders = nn.ModuleDict({s.name: ModalityEncoder(s, self.cfg.encoder) for s in self.specs})
        self.aggregator = PresenceAggregator(len(self.specs), self.cfg.encoder.embed_dim, self.cfg.aggregator)
        self.head = nn.Linear(self.aggregator.feature_dim, n_classes)
        self.n_classes = n_classes

    def fit_window_floors(self, x: dict[str, torch.Tensor]) -> "CroSSLNet":
        """Set every encoder's window-std floor from training windows {name: [N, C, T]} (EncoderConfig.window_floor
        "relative"; a no-op for "absolute"). Call it on a new network before training it: until then the floor
        is window_std_floor in normalised units."""
        for name in self.names:
            self.encoders[name].fit_window_floor(x[name])
        return self

    def embed(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-modality embeddings stacked on the modality axis: [B, M, D]."""
        return torch.stack([self.encoders[name](x[name]) for name in self.names], dim=1)

    def global_embedding(self, x: dict[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        z = self.embed(x)  # [B, M, D]
        if keep is None:
            keep = torch.ones(z.shape[:2], device=z.device)
        return self.aggregator.features(z, keep)  # [B, feature_dim]

    def forward(self, x: dict[str, torch.Tensor], presence: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits [B, K]; `presence` [B, M] marks the modalities that are there (default: all)."""
        return self.head(self.global_embedding(x, presence))

    def backbone_parameters(self):
        """Everything CroSSL pretrains (encoders and aggregator), not the head."""
        return list(self.encoders.parameters()) + list(self.aggregator.parameters())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
