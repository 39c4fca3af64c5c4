"""How export cuts a network into int8 programs (crossl_edge.export.programs), checked below the backends."""

from __future__ import annotations

import torch

from crossl_edge.export.programs import EncoderProgram, Program, _pt2e, quantize, statistics_batch_norm_folded
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


def test_compacting_a_pte_moves_its_weights_into_the_delegates_and_keeps_every_output_bit_identical():
    """executorch_backend.compact moves XNNPACK's named weights into its delegate blobs and re-packs their graphs:
    the int8 program must load and give the same bits as the one ExecuTorch wrote, and be smaller."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.runtime import Runtime

    from crossl_edge.export import executorch_backend
    from crossl_edge.models.encoder import conv2d_form
    from crossl_edge.runtime.backends import quiet_stderr

    enc = trained_looking_encoder()
    x = torch.randn(16, 2, 240) * 3 + 5
    program = Program("enc_eda", EncoderProgram(conv2d_form(enc)).eval(), (x[:1],), [(x[i : i + 1],) for i in range(16)],
                      (("x",), ("embedding",)), executorch_backend.ENCODER_PLANS[:1])
    module, _ = quantize(program, executorch_backend._quantizer)
    edge = to_edge_transform_and_lower({"enc_eda": torch.export.export(module, program.example)},
                                       partitioner=[XnnpackPartitioner()])
    raw = edge.to_executorch().buffer
    small = executorch_backend.compact(raw)
    assert deserialize_pte_binary(raw).named_data.pte_data  # what there was to move
    assert len(small) < len(raw) - 1000
    assert deserialize_pte_binary(small).named_data is None
    with quiet_stderr():
        a = Runtime.get().load_program(raw).load_method("enc_eda")
        b = Runtime.get().load_program(small).load_method("enc_eda")
        for i in range(16):
            xa, xb = a.execute([x[i : i + 1]])[0], b.execute([x[i : i + 1]])[0]
            assert torch.equal(xa, xb), i
