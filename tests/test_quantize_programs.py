"""How export cuts a network into int8 programs (crossl_edge.export.programs), checked below the backends."""

from __future__ import annotations

import torch

from crossl_edge.export.programs import EncoderProgram, Program, _pt2e, statistics_batch_norm_folded
from crossl_edge.models.encoder import EncoderConfig, ModalityEncoder
from crossl_edge.spec import ModalitySpec


def trained_looking_encoder(seed: int = 0) -> ModalityEncoder:
    """An encoder whose batch norms hold running statistics and affine terms far from their defaults."""
    torch.manual_seed(seed)
    enc = ModalityEncoder(ModalitySpec("eda", "eda", 2, 4.0, 240), EncoderConfig())
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0.0, 2.0)
            m.running_var.uniform_(1e-4, 5.0)
            m.weight.data.normal_(1.0, 0.5)
            m.bias.data.normal_(0.0, 0.5)
    return enc.eval()


def test_folding_the_statistics_batch_norm_keeps_the_encoder_and_leaves_no_batch_norm_after_int8():
    enc = trained_looking_encoder()
    x = torch.randn(16, 2, 240) * 3 + 5
    folded = statistics_batch_norm_folded(enc)
    with torch.no_grad():
        ref, out = enc(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4), float((out - ref).abs().max())
    assert isinstance(enc.stats[0], torch.nn.BatchNorm1d)  # the original is untouched

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    program = Program("enc_eda", EncoderProgram(enc).eval(), (x[:1],), [(x[i : i + 1],) for i in range(8)],
                      (("x",), ("embedding",)), ((torch.nn.Conv1d,),))
    converted = _pt2e(program, quantizer, fold_quantize=True)
    # a batch norm left in the graph is what sends convert_pt2e into its slow QAT folding pass
    assert not [n.name for n in converted.graph.nodes if "batch_norm" in str(n.target)]
    with torch.no_grad():
        q = torch.cat([converted(x[i : i + 1]) for i in range(8)])
    assert float((q - ref[:8]).norm() / ref[:8].norm()) < 0.1
