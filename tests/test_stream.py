"""The streaming classifier's ring buffers (no bundle needed)."""

from __future__ import annotations

import numpy as np

from crossl_edge.runtime.stream import _Channel
from crossl_edge.spec import ModalitySpec


def test_ring_keeps_a_push_longer_than_itself_at_the_right_positions():
    """One push holding more samples than the ring must leave sample j at j % capacity, wherever the ring was."""
    spec = ModalitySpec("acc", "acc", 1, 32, 320)
    for before in (0, 1, 100, 449):
        ch = _Channel(spec, 450)
        ch.reset(0.0)
        ramp = np.arange(before + 960, dtype=np.float32)[:, None]
        if before:
            ch.append(ramp[:before])
        ch.append(ramp[before:])  # 960 samples into a ring of 450
        window = ch.window(ch.count, np.zeros((1, 320), dtype=np.float32))
        assert np.array_equal(window[0], np.arange(ch.count - 320, ch.count, dtype=np.float32))
