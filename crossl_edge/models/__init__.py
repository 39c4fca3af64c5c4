"""Networks (need torch)."""

from crossl_edge.models.aggregator import AggregatorConfig, PresenceAggregator
from crossl_edge.models.crossl import CroSSLNet, ModelConfig, count_parameters
from crossl_edge.models.encoder import EncoderConfig, ModalityEncoder

__all__ = [
    "AggregatorConfig",
    "CroSSLNet",
    "EncoderConfig",
    "ModalityEncoder",
    "ModelConfig",
    "PresenceAggregator",
    "count_parameters",
]
