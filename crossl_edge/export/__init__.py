"""Export to the edge (needs torch, executorch, litert-torch): `python -m crossl_edge.export --int8`.

A trained run becomes a bundle folder (export/<name>/): per-modality encoder programs and one
aggregator+head program for ExecuTorch and LiteRT, a manifest with sha256 checksums, verified against
the PyTorch model before it is published. The runtime that loads it is `crossl_edge.runtime` (no torch).
"""


def main(argv=None) -> int:
    from crossl_edge.export.cli import main as _main

    return _main(argv)
