"""Pretraining, fine-tuning, evaluation and the CLIs, on real data (LIS EMG-IMU: small, and learnable within a day)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from crossl_edge.data import DataError, load_windows
from crossl_edge.models import CroSSLNet, ModelConfig
from crossl_edge.training import pretrain as pretrain_mod
from crossl_edge.training.checkpoint import CheckpointError
from crossl_edge.training.device import place
from crossl_edge.training.pretrain import PretrainConfig, pretrain
from crossl_edge.training.protocol import split_windows
from crossl_edge.training.runs import (
    DataChoice, fit_classifier, label_budget, load_net, prepare, read_run, run_pretraining, save_net, heldout_scores,
)
from crossl_edge.training.supervised import FinetuneConfig

CPU = place("cpu")
LIS = DataChoice(dataset="lis-emg-imu", protocol="kfold:5", split=0)


@pytest.fixture(scope="module")
def lis_raw(datasets_root):
    return load_windows("lis-emg-imu", datasets_root)


@pytest.fixture(scope="module")
def lis(lis_raw):
    return prepare(LIS, raw=lis_raw)


def test_protocols_never_leak(lis_raw):
    for protocol in ("kfold:5", "group:2020-07-09"):
        for split in range(3):
            parts = split_windows(lis_raw, protocol, split)
            assert not set(parts.train) & set(parts.test)
            assert not set(parts.val) & set(parts.test)
            assert not set(parts.train) & set(parts.val)
    day = split_windows(lis_raw, "group:2020-07-09")
    assert len(day.test) == 78 and set(lis_raw.group[day.test]) == {"2020-07-09"}
    with pytest.raises(DataError, match="0..4"):
        split_windows(lis_raw, "kfold:5", 5)
    assert len(split_windows(lis_raw, "kfold:10", 7).test) == 78  # k, not --n-splits, bounds the fold


def test_subject_protocol_rotates_test_subjects(datasets_root):
    ws = load_windows("stress-predict", datasets_root, modalities=["temp"])
    tests = [set(split_windows(ws, "subjects", k, 5).description["test"]) for k in range(5)]
    for k, t in enumerate(tests):
        parts = split_windows(ws, "subjects", k, 5)
        assert not set(ws.subject[parts.train]) & t and not set(ws.subject[parts.val]) & t
    assert set().union(*tests) == set(ws.subject)  # five splits hold every subject out once


def test_crossl_end_to_end_learns_on_real_data(lis, tmp_path):
    """Pretrain, probe on 5 labels per class, fine-tune on all training labels: held-out macro-F1 far above
    chance (1/26 = 0.04). Within-day folds of this set are learnable (window statistics reach ~0.9)."""
    torch.manual_seed(0)
    net, result = run_pretraining(tmp_path / "run", lis, ModelConfig(), PretrainConfig(epochs=6, batch_size=64), CPU, False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]  # VICReg goes down
    few = label_budget(lis, None, 5, seed=0)
    assert len(few) == 26 * 5
    probe = copy.deepcopy(net)
    fit_classifier(probe, lis, few, FinetuneConfig(mode="probe", max_steps=300), CPU, False)
    tuned = copy.deepcopy(net)
    fit_classifier(tuned, lis, label_budget(lis, 1.0, None, seed=0), FinetuneConfig(mode="finetune", max_steps=250, lr=3e-3), CPU, False)
    scores_probe = heldout_scores(probe, lis, all_subsets=False)
    scores_tuned = heldout_scores(tuned, lis)
    assert scores_probe["emg+acc+gyro"] > 0.12, scores_probe
    assert scores_tuned["emg+acc+gyro"] > 0.5, scores_tuned
    assert len(scores_tuned) == 7  # every non-empty subset of 3 modalities
    # the probe left the pretrained backbone untouched, BatchNorm running statistics included
    for (name, a), b in zip(probe.state_dict().items(), net.state_dict().values()):
        if not name.startswith("head."):
            assert torch.equal(a, b), name


def test_pretraining_resumes_exactly_after_a_kill(lis, tmp_path, monkeypatch):
    x = lis.tensors(lis.train[:256])
    cfg = PretrainConfig(epochs=3, batch_size=64, seed=1)
    torch.manual_seed(0)
    straight = CroSSLNet(lis.ws.specs, 26)
    pretrain(straight, x, cfg, CPU, None, progress=False)

    real_save = pretrain_mod.save_state
    calls = {"n": 0}

    def save_then_die(path, state):
        real_save(path, state)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 1 was saved

    ckpt = tmp_path / "pretrain.ckpt.pt"
    torch.manual_seed(0)
    interrupted = CroSSLNet(lis.ws.specs, 26)
    monkeypatch.setattr(pretrain_mod, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(interrupted, x, cfg, CPU, ckpt, progress=False)
    monkeypatch.setattr(pretrain_mod, "save_state", real_save)
    resumed = CroSSLNet(lis.ws.specs, 26)
    result = pretrain(resumed, x, cfg, CPU, ckpt, progress=False)
    assert result.resumed_from_epoch == 1 and len(result.history) == 3
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(CheckpointError, match="another pretraining or model configuration"):
        pretrain(CroSSLNet(lis.ws.specs, 26), x, PretrainConfig(epochs=4, batch_size=64, seed=1), CPU, ckpt, progress=False)


def test_checkpoint_for_other_modalities_is_refused(datasets_root, tmp_path):
    choice = DataChoice(dataset="stress-predict", modalities=["eda", "temp"])
    prep = prepare(choice, datasets_root)
    run_pretraining(tmp_path / "a", prep, ModelConfig(), PretrainConfig(epochs=0), CPU, False)
    info = read_run(tmp_path / "a")
    # run.json says where the data came from, so later steps find it without --data (issue 16 stumble 7)
    assert info.data_source == {"folder": str((datasets_root / "stress-predict").resolve()), "from": f"--data {datasets_root}"}
    other = CroSSLNet(prep.ws.specs[:1], 2)  # eda only
    save_net(tmp_path / "other.pt", other)
    with pytest.raises(CheckpointError, match=r"made for modalities \['eda'\]"):
        load_net(tmp_path / "other.pt", info)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_net(tmp_path / "junk.pt", info)
    # nor for other settings: the models in the folder were trained on that backbone
    with pytest.raises(CheckpointError, match="other model or pretraining settings"):
        run_pretraining(tmp_path / "a", prep, ModelConfig(), PretrainConfig(epochs=1), CPU, False)
    # the same folder cannot silently be reused for other data
    with pytest.raises(CheckpointError, match="other data"):
        run_pretraining(tmp_path / "a", prepare(DataChoice(dataset="lis-emg-imu", protocol="kfold:5"), datasets_root),
                        ModelConfig(), PretrainConfig(epochs=0), CPU, False)


def test_cli_pretrain_finetune_evaluate(datasets_root, tmp_path, capsys):
    from crossl_edge import evaluate, finetune
    from crossl_edge import pretrain as pretrain_cli

    run = str(tmp_path / "cli")
    common = ["--quiet", "--threads", "2"]
    assert pretrain_cli.main(["--run", run, "--dataset", "lis-emg-imu", "--protocol", "kfold:5", "--epochs", "2", *common]) == 0
    assert finetune.main(["--run", run, "--mode", "finetune", "--labels-per-class", "3", "--steps", "30", "--set-default", *common]) == 0
    assert finetune.main(["--run", run, "--mode", "scratch", "--label-fraction", "0.2", "--steps", "30", *common]) == 0
    assert finetune.main(["--run", run, "--mode", "random_probe", "--labels-per-class", "3", "--seed", "4", *common]) == 0
    out = capsys.readouterr().out
    assert "test macro-F1" in out and "model_finetune_3pc.pt" in out
    # random_probe: untrained encoders seeded by --seed, only the head fitted; not the pretrained backbone
    from crossl_edge.training.runs import load_net, read_run

    info = read_run(tmp_path / "cli")
    probe, backbone = load_net(tmp_path / "cli" / "model_random_probe_3pc.pt", info), load_net(tmp_path / "cli" / "backbone.pt", info)
    torch.manual_seed(4)
    fresh = info.new_net()
    for name, value in probe.encoders.state_dict().items():
        if name.endswith("window_floor_sq"):
            # fitted on the run's training windows, as pretraining fitted the backbone's, not left at the default
            assert torch.equal(value, backbone.encoders.state_dict()[name]), name
            assert not torch.equal(value, fresh.encoders.state_dict()[name]), name
        else:
            assert torch.equal(value, fresh.encoders.state_dict()[name]), name
    assert not all(torch.equal(v, backbone.encoders.state_dict()[n]) for n, v in probe.encoders.state_dict().items())
    assert evaluate.main(["--run", run, *common]) == 0
    table = capsys.readouterr().out
    assert "emg+acc+gyro" in table and "\ngyro " in table
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert len(metrics["model.pt"]["macro_f1"]) == 7
    assert all(0.0 <= v <= 1.0 for v in metrics["model.pt"]["macro_f1"].values())
    # an all-present-only evaluation updates its score and keeps the per-subset ones stored before it
    assert evaluate.main(["--run", run, "--model", "model_scratch_0.2.pt", "--all-present-only", *common]) == 0
    after = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert after["model_scratch_0.2.pt"]["macro_f1"] == metrics["model_scratch_0.2.pt"]["macro_f1"]
    assert len(after["model_scratch_0.2.pt"]["macro_f1"]) == 7
    # user errors: one clear line and exit code 2, no traceback
    assert evaluate.main(["--run", run, "--model", "nope.pt", *common]) == 2
    assert "models in this run" in capsys.readouterr().err
    assert finetune.main(["--run", str(tmp_path / "missing"), *common]) == 2
    assert "pretrain" in capsys.readouterr().err


def test_deployed_choice_breaks_validation_ties_by_validation_loss():
    from crossl_edge.training.supervised import FitResult, choose_by_validation

    def fit(f1, loss):
        return FitResult(best_val_f1=f1, best_step=0, steps=0, seconds=0.0, val_loss=loss)

    assert choose_by_validation({"a": fit(1.0, 0.9), "b": fit(1.0, 0.2), "c": fit(0.9, 0.01)}) == "b"
    assert choose_by_validation({"a": fit(0.8, 0.9), "b": fit(0.7, 0.2)}) == "a"


def test_unknown_choices_are_refused_with_the_valid_names(capsys):
    from crossl_edge import pretrain as pretrain_cli
    from crossl_edge.__main__ import main as crossl_main

    with pytest.raises(SystemExit):
        pretrain_cli.main(["--masking", "temporal"])
    assert "spatial" in capsys.readouterr().err
    assert crossl_main(["train"]) == 2
    assert "pretrain" in capsys.readouterr().err
    with pytest.raises(ValueError, match="valid modes"):
        FinetuneConfig(mode="linear")


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the point is the message on machines without it
    with pytest.raises(RuntimeError, match="no CUDA device"):
        place("cuda")


def test_ddp_pretraining_under_torchrun_on_cpu(datasets_root, tmp_path):
    """Two processes through torchrun (gloo on the CPU; NCCL on GPUs takes the same path)."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", CROSSL_EDGE_DATA=str(datasets_root))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "crossl_edge.pretrain",
           "--run-dir", str(run), "--dataset", "lis-emg-imu", "--protocol", "kfold:5", "--epochs", "2",
           "--batch-size", "64", "--quiet", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (run / "pretrain_log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]
    assert (run / "backbone.pt").is_file() and not (run / "pretrain.ckpt.pt").exists()


def test_accuracy_benchmark_quick_mode_writes_its_tables(datasets_root, tmp_path):
    from benchmarks import accuracy

    out = tmp_path / "acc"
    assert accuracy.main(["--quick", "--dataset", "lis-emg-imu", "--data", str(datasets_root), "--out", str(out)]) == 0
    md = (out / "accuracy.md").read_text()
    for method in ("supervised", "supervised_mdrop", "crossl_probe", "crossl_finetune", "random_probe", "deployed",
                   "stats_lr", "minirocket"):
        assert f"| {method} " in md
    assert "paired crossl_finetune − supervised" in md and "loss without emg" in md and "within-session" in md
    raw = sorted(p.name for p in (out / "raw" / "lis-emg-imu").iterdir())
    assert raw == ["group_2020-07-09-adapted_split0.json", "group_2020-07-09@emg_split0.json",
                   "group_2020-07-09_split0.json", "kfold_5_split0.json"]
    summary = json.loads((out / "summary.json").read_text())
    methods = {r["method"] for r in summary}
    assert {"deployed", "stats_lr", "minirocket", "deployed@emg", "stats_lr@emg", "deployed_adapted"} <= methods
    for r in summary:
        assert set(r) == {"dataset", "protocol", "budget", "method", "mean", "low", "high", "n"}
        assert r["low"] <= r["high"] and r["budget"] == "5/class"
    # deployed is the learned method with the best validation score (ties: lower validation loss), whatever its test score
    stored = json.loads((out / "raw" / "lis-emg-imu" / "group_2020-07-09_split0.json").read_text())["budgets"]["5/class"]
    learned = {m: (v["val"], -v["val_loss"]) for m, v in stored.items() if m in accuracy.LEARNED}
    assert stored["deployed"]["chosen"] == max(learned, key=learned.get)
    emg = json.loads((out / "raw" / "lis-emg-imu" / "group_2020-07-09@emg_split0.json").read_text())["budgets"]["5/class"]
    assert list(emg["supervised"]["test"]) == ["emg"] and "supervised_mdrop" not in emg  # trained and tested on EMG
    # a second invocation reuses the finished splits instead of recomputing them
    before = (out / "raw" / "lis-emg-imu" / "kfold_5_split0.json").stat().st_mtime_ns
    assert accuracy.main(["--quick", "--dataset", "lis-emg-imu", "--data", str(datasets_root), "--out", str(out)]) == 0
    assert (out / "raw" / "lis-emg-imu" / "kfold_5_split0.json").stat().st_mtime_ns == before


def test_a_refused_pretraining_writes_nothing_so_its_retry_runs(datasets_root, tmp_path, capsys):
    from crossl_edge import pretrain as pretrain_cli

    run = tmp_path / "retry"
    args = ["--run", str(run), "--dataset", "lis-emg-imu", "--protocol", "group:2020-07-09", "--quiet", "--threads", "2"]
    assert pretrain_cli.main([*args, "--epochs", "1", "--batch-size", "5000"]) == 2
    assert "lower --batch-size" in capsys.readouterr().err
    assert not (run / "run.json").exists()
    assert pretrain_cli.main([*args, "--epochs", "1", "--batch-size", "64"]) == 0
    assert (run / "backbone.pt").is_file()
