"""Shared test setup: where the real data sets are, and a throw-away cache.

Tests run against the real published files. CROSSL_EDGE_DATA defaults to ../shared/datasets (relative to
the repository root) when that folder exists; set it yourself to use a copy elsewhere. The parse and
download cache goes to a temporary folder for the session, so tests never read or write
~/.cache/crossl_edge and never reach the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "datasets").resolve()
REQUIRED = ("stress-predict", "lis-emg-imu")


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("CROSSL_EDGE_DATA") and DEFAULT_DATA.is_dir():
        os.environ["CROSSL_EDGE_DATA"] = str(DEFAULT_DATA)
    # Lab Streaming Layer tests stay on this machine (loopback only) and in a session of their own, so tests running
    # beside each other never see each other's streams; subprocesses inherit it (LSLAPICFG)
    from firmware_bridge.lsl import keep_on_this_machine

    keep_on_this_machine("crossl-edge-tests")


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point CROSSL_EDGE_CACHE at a fresh folder for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROSSL_EDGE_CACHE", str(tmp_path_factory.mktemp("crossl_edge_cache")))
        yield


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    """The folder holding stress-predict/ and lis-emg-imu/. Fails (does not skip) when they are absent."""
    env = os.environ.get("CROSSL_EDGE_DATA")
    if not env:
        pytest.fail(
            f"CROSSL_EDGE_DATA is not set and {DEFAULT_DATA} does not exist: the data tests need the real data sets. "
            "Set CROSSL_EDGE_DATA to the folder holding stress-predict/ and lis-emg-imu/."
        )
    root = Path(env)
    missing = [name for name in REQUIRED if not (root / name).is_dir()]
    if missing:
        pytest.fail(f"CROSSL_EDGE_DATA={root} lacks {missing}; point it at the folder holding {', '.join(REQUIRED)}/")
    return root


# ---- a small model trained on real Stress-Predict data, and its bundles (shared by the export, runtime and
# bridge tests; built once per session, on first use) -------------------------------------------------------
TRAIN_ARGS = ["--quiet", "--threads", "2"]


@pytest.fixture(scope="session")
def run_dir(datasets_root, tmp_path_factory):
    """1 CroSSL epoch and 60 fine-tuning steps on split 0 of Stress-Predict."""
    from crossl_edge import finetune, pretrain

    run = tmp_path_factory.mktemp("export") / "run"
    assert pretrain.main(["--run", str(run), "--epochs", "1", *TRAIN_ARGS]) == 0
    assert finetune.main(["--run", str(run), "--mode", "finetune", "--label-fraction", "0.1", "--steps", "60",
                          "--set-default", *TRAIN_ARGS]) == 0
    return run


def export_bundle(run_dir: Path, out: Path, *extra: str) -> Path:
    from crossl_edge import export

    assert export.main(["--run", str(run_dir), "--out", str(out), "--calibration-windows", "128",
                        "--verify-windows", "400", *extra, *TRAIN_ARGS]) == 0
    return out


@pytest.fixture(scope="session")
def int8_bundle(run_dir):
    return export_bundle(run_dir, run_dir.parent / "bundle-int8", "--int8")


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two Ed25519 key pairs, {name: (signing key file, verify key file)}: "exporter" signs the fp32 bundle."""
    from crossl_edge.runtime.signing import keygen

    folder = tmp_path_factory.mktemp("keys")
    return {name: keygen(folder / name) for name in ("exporter", "stranger")}


@pytest.fixture(scope="session")
def fp32_bundle(run_dir, signing_keys):
    """LiteRT fp32: the quickest bundle to export; signed by the "exporter" key (loading it needs no key)."""
    return export_bundle(run_dir, run_dir.parent / "bundle-fp32", "--backends", "litert",
                         "--sign-key", str(signing_keys["exporter"][0]))
