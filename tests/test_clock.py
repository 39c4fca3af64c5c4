"""Clock model: drift, jittery one-sided delays, counter wraps and backward jumps."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.clock import ClockModel


def simulate(model: ClockModel, seconds: float, drift_ppm: float, offset: float, rng, period: float = 0.02,
             wrap: float | None = None, mean_delay: float = 0.015):
    """A device whose clock runs (1 + drift) times slower than the host's, frames every `period` s of host time."""
    true_host = np.arange(0.0, seconds, period) + offset
    device = (true_host - offset) / (1 + drift_ppm * 1e-6)
    arrival = true_host + rng.exponential(mean_delay, size=len(true_host))
    raw = np.mod(device, wrap) if wrap else device
    unwrapped = [model.observe(r, a) for r, a in zip(raw, arrival)]
    return np.asarray(unwrapped), device, true_host


def test_drift_and_jitter_are_fitted_to_a_few_milliseconds():
    rng = np.random.default_rng(0)
    model = ClockModel()
    unwrapped, device, true_host = simulate(model, 120.0, drift_ppm=-40.0, offset=1_700_000_000.0, rng=rng)
    assert np.allclose(unwrapped, device)
    err = np.abs(model.to_host(device[-500:]) - true_host[-500:])
    assert err.max() < 0.005  # 5 ms, against 15 ms mean (and up to ~150 ms) delay jitter
    assert model.drift_ppm == pytest.approx(-40.0, abs=5.0)  # host seconds per device second, minus 1, in ppm


def test_two_devices_line_up_on_the_host_clock():
    rng = np.random.default_rng(1)
    a, b = ClockModel(), ClockModel()
    _, dev_a, host = simulate(a, 60.0, drift_ppm=25.0, offset=100.0, rng=rng)
    _, dev_b, _ = simulate(b, 60.0, drift_ppm=-25.0, offset=100.0, rng=rng, mean_delay=0.03)
    # the same instant, stamped by each device, maps to the same host time
    assert np.abs(a.to_host(dev_a[-100:]) - b.to_host(dev_b[-100:])).max() < 0.01


def test_counter_wraps_are_unwrapped():
    rng = np.random.default_rng(2)
    model = ClockModel(wrap_s=512.0)  # e.g. a 24-bit counter at 32,768 Hz
    unwrapped, device, true_host = simulate(model, 1200.0, drift_ppm=10.0, offset=5.0, rng=rng, period=0.5)
    assert model.counters.wraps == 0  # this device's raw time was not wrapped by simulate
    model = ClockModel(wrap_s=512.0)
    unwrapped, device, true_host = simulate(model, 1200.0, drift_ppm=10.0, offset=5.0, rng=rng, period=0.5, wrap=512.0)
    assert model.counters.wraps == 2 and np.allclose(unwrapped, device)
    assert abs(model.to_host(device[-1]) - true_host[-1]) < 0.01


def test_a_backward_jump_starts_a_new_segment():
    model = ClockModel()
    for k in range(100):
        model.observe(10.0 + k * 0.1, 1000.0 + k * 0.1)
    model.observe(5.0, 1010.05)  # the device clock jumped back 5 s
    assert model.counters.backward_jumps == 1
    assert model.to_host(5.0) == pytest.approx(1010.05)  # re-anchored on the new segment
    with pytest.raises(RuntimeError):
        ClockModel().to_host(1.0)
