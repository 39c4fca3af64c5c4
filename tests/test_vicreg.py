import math

import pytest
import torch

from crossl_edge.vicreg import VICRegLoss, covariance_loss, invariance_loss, variance_loss

A = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
B = torch.tensor([[0.0, 0.0], [2.0, 2.0]])


def test_terms_match_hand_computed_values():
    # (a - b)^2 = [[0, 4], [0, 4]] -> mean 2
    assert invariance_loss(A, B).item() == pytest.approx(2.0)
    # every column has unbiased variance 2: hinge at gamma=2 gives 2 - sqrt(2 + 1e-4)
    assert variance_loss(A, gamma=2.0).item() == pytest.approx(2.0 - math.sqrt(2.0001), rel=1e-6)
    assert variance_loss(A, gamma=1.0).item() == 0.0  # std 1.41 is above the hinge
    # cov(A) = [[2, -2], [-2, 2]], cov(B) = [[2, 2], [2, 2]]: off-diagonal squares 8, divided by E=2
    assert covariance_loss(A).item() == pytest.approx(4.0)
    assert covariance_loss(B).item() == pytest.approx(4.0)


def test_total_combines_terms_with_coefficients():
    loss, parts = VICRegLoss(sim=3.0, std=5.0, cov=7.0, gamma=2.0)(A, B)
    var = 2.0 - math.sqrt(2.0001)
    assert loss.item() == pytest.approx(3 * 2.0 + 5 * var + 7 * 8.0, rel=1e-6)
    assert parts["invariance"] == pytest.approx(2.0)
    assert parts["covariance"] == pytest.approx(8.0)


def test_symmetric_in_views():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    loss_fn = VICRegLoss()
    assert loss_fn(a, b)[0].item() == pytest.approx(loss_fn(b, a)[0].item(), rel=1e-6)


def test_identical_decorrelated_views_cost_only_what_is_collapsed():
    # Orthogonal columns with std >= 1 and identical views: every term is zero.
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 2
    loss, parts = VICRegLoss()(x, x.clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # A collapsed representation is penalised by the variance term.
    collapsed = torch.zeros(4, 2)
    loss_c, parts_c = VICRegLoss()(collapsed, collapsed)
    assert parts_c["variance"] == pytest.approx(1.0 - math.sqrt(1e-4), rel=1e-6)
    assert loss_c.item() > 5.0


def test_gradients_flow_to_both_views():
    a = torch.randn(8, 4, requires_grad=True)
    b = torch.randn(8, 4, requires_grad=True)
    VICRegLoss()(a, b)[0].backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one shape"):
        VICRegLoss()(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        VICRegLoss()(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="cov"):
        VICRegLoss(cov=-1)
