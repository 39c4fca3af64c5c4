import pytest
import torch

from crossl_edge.models import CroSSLNet, ModelConfig, count_parameters
from crossl_edge.spec import ModalitySpec, SpecError

STRESS = (
    ModalitySpec("acc", "acc", 3, 32, 320),
    ModalitySpec("bvp", "bvp", 1, 64, 640),
    ModalitySpec("eda", "eda", 1, 4, 40),
    ModalitySpec("temp", "temp", 1, 4, 40),
)
LIS = (ModalitySpec("emg", "emg", 8, 200, 400), ModalitySpec("acc", "acc", 3, 200, 400), ModalitySpec("gyro", "gyro", 3, 200, 400))


@pytest.mark.parametrize("specs,n_classes", [(STRESS, 2), (LIS, 26), (STRESS[2:3], 3)])
def test_shapes_and_size(specs, n_classes):
    net = CroSSLNet(specs, n_classes)
    x = {s.name: torch.randn(5, s.channels, s.window) for s in specs}
    z = net.embed(x)
    assert z.shape == (5, len(specs), net.cfg.encoder.embed_dim)
    assert net.global_embedding(x).shape == (5, net.cfg.aggregator.out_dim + len(specs) * net.cfg.encoder.embed_dim)
    assert net(x).shape == (5, n_classes)
    for enc in net.encoders.values():
        assert count_parameters(enc) <= 30_000  # the size aim per encoder


def test_absent_modalities_do_not_influence_the_output():
    torch.manual_seed(0)
    net = CroSSLNet(STRESS, 2).eval()
    x = {s.name: torch.randn(3, s.channels, s.window) for s in STRESS}
    presence = torch.tensor([[1.0, 0.0, 1.0, 0.0]]).expand(3, 4)
    a = net(x, presence)
    x2 = dict(x, bvp=torch.randn(3, 1, 640) * 100, temp=torch.randn(3, 1, 40))
    b = net(x2, presence)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, net(x2), atol=1e-3)  # with all present, the changed inputs matter


def test_config_round_trip():
    cfg = ModelConfig()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_specs_validated():
    with pytest.raises(SpecError, match="same window duration"):
        CroSSLNet((ModalitySpec("a", "acc", 3, 32, 320), ModalitySpec("b", "eda", 1, 4, 20)), 2)
    with pytest.raises(SpecError, match="unknown kind"):
        ModalitySpec("a", "accelerometer", 3, 32, 320)


def test_export_friendly_aggregator_path_equals_forward():
    """forward_presence (what export lowers) computes the same function as forward, for every presence mask."""
    torch.manual_seed(0)
    net = CroSSLNet(STRESS, 3).eval()
    with torch.no_grad():
        net.aggregator.mask_token.normal_()
        net.aggregator.norm.weight.uniform_(0.5, 1.5)
        net.aggregator.norm.bias.normal_()
    z = torch.randn(16, len(STRESS), 64) * 3 + 1
    keep = (torch.rand(16, len(STRESS)) > 0.4).float()
    with torch.no_grad():
        torch.testing.assert_close(net.aggregator.forward_presence(z, keep), net.aggregator.features(z, keep), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", [*STRESS, *LIS, ModalitySpec("ecg", "ecg", 1, 130, 520)], ids=lambda s: s.name)
@pytest.mark.parametrize("input_norm", ["window", "none"])
def test_the_conv2d_export_form_computes_the_same_embedding(spec, input_norm):
    """conv2d_form (what export lowers) is the trained encoder with its convs as 1 x k Conv2d: same function,
    in training mode too (batch statistics), and the original is left as it was."""
    from crossl_edge.models.encoder import EncoderConfig, ModalityEncoder, conv2d_form

    torch.manual_seed(0)
    enc = ModalityEncoder(spec, EncoderConfig(input_norm=input_norm))
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0.0, 1.0)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.normal_(1.0, 0.3)
    x = torch.randn(6, spec.channels, spec.window) * 2 + 1
    form = conv2d_form(enc.eval())
    assert not any(isinstance(m, (torch.nn.Conv1d, torch.nn.BatchNorm1d)) for m in [*form.stem, *form.blocks.modules()])
    assert any(isinstance(m, torch.nn.Conv1d) for m in enc.modules())
    with torch.no_grad():
        ref, out = enc(x), form(x)
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5), float((out - ref).abs().max())
        enc.train(), form.train()
        torch.manual_seed(1)
        ref = enc(x)
        torch.manual_seed(1)  # the same dropout mask
        assert torch.allclose(form(x), ref, rtol=1e-4, atol=1e-4)
