"""crossl-edge: CroSSL self-supervised learning for wearable sensors, exported to the edge.

Importing this package has no side effects and does not import torch; the training
modules import torch themselves, the runtime never does.
"""

__version__ = "0.1.0"

from crossl_edge.spec import ModalitySpec, SpecError  # noqa: E402

__all__ = ["ModalitySpec", "SpecError", "__version__"]
