"""Small pure pieces of training, checked against hand-computed values (no data, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crossl_edge.metrics import confusion_matrix, macro_f1
from crossl_edge.training.batches import batch_indices
from crossl_edge.training.pretrain import PretrainConfig, lr_factor
from crossl_edge.training.supervised import FinetuneConfig, class_weights


def test_macro_f1_hand_computed():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    # class 0: tp 2, fn 1, fp 0 -> 4/5; class 1: tp 1, fn 1, fp 1 -> 1/2; class 2: tp 1, fn 0, fp 1 -> 2/3
    assert macro_f1(y, p, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert confusion_matrix(y, p, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_macro_f1_counts_a_class_that_is_only_predicted_and_ignores_absent_ones():
    y = np.array([0, 0, 1, 1])
    # class 2 never occurs but is predicted once: F1 0 for it, and it counts
    assert macro_f1(y, np.array([0, 0, 1, 2]), 4) == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    # class 3 neither occurs nor is predicted: not averaged in
    assert macro_f1(y, y, 4) == 1.0
    # a constant predictor on a 2:1 set is far from 1 (this is what a batch-thresholded "F1" hides)
    assert macro_f1(np.array([0, 0, 1]), np.array([0, 0, 0]), 2) == pytest.approx((0.8 + 0.0) / 2)


def test_class_weights_balance_the_classes():
    y = np.array([0] * 6 + [1] * 2 + [3] * 4)
    w = class_weights(y, 4).numpy()
    assert w[2] == 0.0  # absent class
    counts = np.bincount(y, minlength=4)
    assert np.allclose(w[[0, 1, 3]] * counts[[0, 1, 3]], 12 / 3)  # every present class weighs the same
    assert (w[y].mean()) == pytest.approx(1.0)


@pytest.mark.parametrize("n,batch,world", [(100, 8, 2), (97, 8, 3), (64, 16, 4), (10, 4, 1)])
def test_batch_indices_equal_per_rank_and_disjoint(n, batch, world):
    per_rank = [list(batch_indices(n, batch, True, seed=3, rank=r, world=world)) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # DDP needs the same step count on every rank
    seen = np.concatenate([np.concatenate(b) for b in per_rank if b])
    assert len(seen) == len(set(seen.tolist()))
    if world > 1:
        assert all(len(x) == batch for b in per_rank for x in b)
    else:
        assert sorted(seen.tolist()) == list(range(n))


def test_lr_schedule_warms_up_then_follows_the_cosine():
    warmup, total = 10, 100
    f = [lr_factor(s, warmup, total) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(0)))
    assert f[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 100)))
    assert f[50] == pytest.approx(0.5) and f[100] == pytest.approx(0.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))  # rising during warm-up
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # decaying after it


def test_configs_refuse_bad_values():
    with pytest.raises(ValueError, match="batch_size"):
        PretrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="epochs"):
        PretrainConfig(epochs=-1)
    with pytest.raises(ValueError, match="keep_prob"):
        PretrainConfig(keep_prob=1.5)
    with pytest.raises(ValueError, match="valid strategies"):
        PretrainConfig(masking="temporal")
    with pytest.raises(ValueError, match="max_steps"):
        FinetuneConfig(max_steps=0)
    with pytest.raises(ValueError, match="modality dropout needs"):
        FinetuneConfig(mode="probe", modality_dropout=0.2)
    assert PretrainConfig.from_dict(PretrainConfig().to_dict()) == PretrainConfig()


def test_auto_step_budget_follows_the_labelled_windows():
    """Issue 16 stumble 8: 1,000 steps over a handful of labelled windows took minutes for nothing."""
    from crossl_edge.training.supervised import auto_steps

    assert auto_steps(8, 64) == 300  # 100 passes are 100 steps of the 8 windows: the floor (early stopping's patience)
    assert auto_steps(200, 64) == 313  # ceil(100 * 200 / 64)
    assert auto_steps(640, 64) == 1000 and auto_steps(22_000, 64) == 1000  # a large set keeps the old budget
