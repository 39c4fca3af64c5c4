import pytest
import torch

from crossl_edge.masking import STRATEGIES, LatentMasking

B, M, D = 4000, 4, 16


@pytest.mark.parametrize("keep_prob", [0.5, 0.75, 0.9])
def test_spatial_masks_whole_modalities_at_the_right_rate(keep_prob):
    g = torch.Generator().manual_seed(1)
    keep = LatentMasking("spatial", keep_prob)(torch.zeros(B, M, D), generator=g)
    assert keep.shape == (B, M, D)
    # whole modality rows: constant along D
    assert torch.equal(keep, keep[:, :, :1].expand(B, M, D))
    # never an empty view
    assert (keep[:, :, 0].sum(1) >= 1).all()
    # rate: keep_prob plus the rescued all-dropped rows, (1 - p)^M / M
    expected = keep_prob + (1 - keep_prob) ** M / M
    rate = keep[:, :, 0].mean().item()
    sd = (expected * (1 - expected) / (B * M)) ** 0.5
    assert abs(rate - expected) < 5 * sd


def test_random_mask_rate_and_independence():
    g = torch.Generator().manual_seed(2)
    keep = LatentMasking("random", 0.6)(torch.zeros(B, M, D), generator=g)
    assert abs(keep.mean().item() - 0.6) < 5 * (0.24 / keep.numel()) ** 0.5
    # not constant along D or M: single elements are dropped
    assert not torch.equal(keep, keep[:, :, :1].expand(B, M, D))
    assert not torch.equal(keep, keep[:, :1, :].expand(B, M, D))


def test_feature_mask_drops_the_same_features_across_modalities():
    g = torch.Generator().manual_seed(3)
    keep = LatentMasking("feature", 0.7)(torch.zeros(B, M, D), generator=g)
    assert torch.equal(keep, keep[:, :1, :].expand(B, M, D))
    assert abs(keep[:, 0].mean().item() - 0.7) < 5 * (0.21 / (B * D)) ** 0.5


def test_masks_differ_between_draws():
    m = LatentMasking("spatial", 0.5)
    z = torch.zeros(64, M, D)
    assert not torch.equal(m(z), m(z))


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        LatentMasking("temporal")
    for s in STRATEGIES:
        assert s in str(e.value)
    with pytest.raises(ValueError, match="keep_prob"):
        LatentMasking("spatial", 0.0)
