"""A run folder: everything one trained model needs, in files a later step (fine-tune, evaluate, export) reads.

runs/<name>/
  run.json               data set, windowing, protocol and split, ModalitySpecs, class names,
                         normalisation statistics (training subjects only), model and pretraining config,
                         and where the data set was found (so later steps find it with no --data)
  pretrain.ckpt.pt       resumable pretraining state (deleted once pretraining finishes)
  pretrain_log.jsonl     one JSON line of losses per epoch
  backbone.pt            pretrained network state (encoders + aggregator; head untrained)
  model_<tag>.pt/.json   a trained classifier and how it was made (mode, labels used, validation score)
  model.pt               the classifier the export step takes by default (a copy of the demo's fine-tuned one)
  metrics.json           test macro-F1, overall and per modality subset, per model
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from crossl_edge.baselines import fit_stats_baseline, stats_baseline_scores
from crossl_edge.data import NormStats, WindowSet, find_dataset_root, load_windows, sample_labels
from crossl_edge.data.normalize import session_normalize
from crossl_edge.data.types import DataError
from crossl_edge.models.crossl import CroSSLNet, ModelConfig
from crossl_edge.spec import ModalitySpec
from crossl_edge.training.batches import window_tensors
from crossl_edge.training.checkpoint import CheckpointError, load_json, load_state, save_json, save_state
from crossl_edge.training.device import Placement
from crossl_edge.training.evaluate import evaluate_subsets
from crossl_edge.training.pretrain import PretrainConfig, PretrainResult, check_enough_windows, pretrain
from crossl_edge.training.protocol import split_windows
from crossl_edge.training.supervised import FRESH_MODES, FinetuneConfig, FitResult, train_classifier

log = logging.getLogger(__name__)

CHECKPOINT = "pretrain.ckpt.pt"  # resumable pretraining state inside a run folder
NORMALIZATIONS = ("global", "session")


@dataclass
class DataChoice:
    """Which windows a run uses; stored in run.json so later steps rebuild exactly the same data."""

    dataset: str = "stress-predict"
    window_s: float | None = None  # None: the data set's default
    hop_s: float | None = None
    modalities: list[str] | None = None  # None: all of the data set's modalities
    protocol: str = "subjects"  # see crossl_edge.training.protocol
    split: int = 0
    n_splits: int = 5
    split_seed: int = 0
    # "global": the training windows' statistics for everyone; "session": each user's (or day's) own running
    # statistics, learnt without labels from their stream (crossl_edge.data.normalize.session_normalize)
    normalization: str = "global"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise DataError(f"unknown normalisation {self.normalization!r}; valid: {', '.join(NORMALIZATIONS)}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Prepared:
    """Normalised windows and the split, ready for training."""

    choice: DataChoice
    ws: WindowSet  # normalised with `norm`
    norm: NormStats
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    split_info: dict = field(default_factory=dict)
    data_source: dict | None = None  # where the data set was found (run.json's "data_source"); None: windows given

    def tensors(self, idx: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return window_tensors(self.ws.subset(idx), device)

    def labelled(self, idx: np.ndarray) -> np.ndarray:
        return idx[self.ws.y[idx] >= 0]


def load_raw(choice: DataChoice, data_root: str | Path | None = None) -> WindowSet:
    return load_windows(
        choice.dataset, data_root, window_s=choice.window_s, hop_s=choice.hop_s, modalities=choice.modalities
    )


def locate_data(dataset: str, data_root: str | Path | None = None) -> dict:
    """Where data set `dataset` is (looked up as every loader does: --data, $CROSSL_EDGE_DATA, the cache, a
    download) and how it was found: {"folder": absolute path of the data set folder, "from": "--data <as given>",
    "CROSSL_EDGE_DATA=<value>" or "cache"}. Stored in run.json, so that finetune, evaluate, export and baseline
    find the run's data again without --data (run.json lives in the user's run folder: a path of this machine
    is in its place there)."""
    folder = find_dataset_root(dataset, data_root, download=dataset != "byo").resolve()
    env = os.environ.get("CROSSL_EDGE_DATA")
    if data_root is not None:
        how = f"--data {data_root}"
    elif env and folder.parent == Path(env).expanduser().resolve():
        how = f"CROSSL_EDGE_DATA={env}"
    else:
        how = "cache"
    return {"folder": str(folder), "from": how}


def run_data_root(info: "RunInfo", data_root: str | Path | None = None) -> str | Path | None:
    """The data root for a later step of a run: `data_root` when given (--data), else the folder run.json says
    the run's data came from while it still holds the data set, else None (the usual places are searched)."""
    if data_root is not None or not info.data_source:
        return data_root
    folder = Path(info.data_source["folder"])
    try:
        return find_dataset_root(info.choice.dataset, folder, download=False)
    except DataError:
        log.warning("the run's data was found at %s (%s), which no longer holds %s; looking in the usual places "
                    "(pass --data to say where it is now)", folder, info.data_source.get("from"), info.choice.dataset)
        return None


def prepare(
    choice: DataChoice, data_root: str | Path | None = None, norm: NormStats | None = None, raw: WindowSet | None = None
) -> Prepared:
    """Load (or take `raw`), split, and normalise with statistics of the training windows only (or `norm`)."""
    source = None
    if raw is None:
        source = locate_data(choice.dataset, data_root)
        raw = load_raw(choice, source["folder"])
    parts = split_windows(raw, choice.protocol, choice.split, choice.n_splits, seed=choice.split_seed)
    for name, idx in (("training", parts.train), ("validation", parts.val), ("test", parts.test)):
        if not (raw.y[idx] >= 0).any():
            # without labelled validation windows model selection has nothing to go on; without test ones, no score
            raise DataError(f"the {name} part of split {choice.split} of {choice.protocol!r} has no labelled windows")
    norm = norm if norm is not None else NormStats.fit(raw, parts.train)
    ws = norm.apply(raw) if choice.normalization == "global" else session_normalize(raw, sessions(raw), norm)
    return Prepared(choice, ws, norm, parts.train, parts.val, parts.test, parts.description, source)


def sessions(ws: WindowSet) -> np.ndarray:
    """The unit of session normalisation: one subject on one day (group)."""
    return np.char.add(np.char.add(ws.subject.astype(str), "|"), ws.group.astype(str))


def write_run_json(run_dir: Path, prep: Prepared, model_cfg: ModelConfig, pretrain_cfg: PretrainConfig | None) -> None:
    save_json(
        Path(run_dir) / "run.json",
        {
            "format": "crossl-edge-run/1",
            "data": prep.choice.to_dict(),
            "split": {k: (list(v) if isinstance(v, tuple) else v) for k, v in prep.split_info.items()},
            "modalities": [s.to_dict() for s in prep.ws.specs],
            "class_names": list(prep.ws.class_names),
            "normalization": prep.norm.to_dict(),
            "model": model_cfg.to_dict(),
            "pretrain": pretrain_cfg.to_dict() if pretrain_cfg else None,
            "data_source": prep.data_source,
        },
    )


@dataclass
class RunInfo:
    run_dir: Path
    choice: DataChoice
    specs: tuple[ModalitySpec, ...]
    class_names: tuple[str, ...]
    norm: NormStats
    model_cfg: ModelConfig
    pretrain_cfg: PretrainConfig | None
    data_source: dict | None = None  # where pretraining found the data set (see locate_data); None in older runs

    def new_net(self) -> CroSSLNet:
        return CroSSLNet(self.specs, len(self.class_names), self.model_cfg)


def read_run(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise CheckpointError(
            f"{run_dir} is not a run folder (no run.json); make one with `python -m crossl_edge.pretrain --run {run_dir}` "
            "or `make demo`"
        )
    d = load_json(run_dir / "run.json")
    try:
        return RunInfo(
            run_dir=run_dir,
            choice=DataChoice(**d["data"]),
            specs=tuple(ModalitySpec.from_dict(s) for s in d["modalities"]),
            class_names=tuple(d["class_names"]),
            norm=NormStats.from_dict(d["normalization"]),
            model_cfg=ModelConfig.from_dict(d["model"]),
            pretrain_cfg=PretrainConfig.from_dict(d["pretrain"]) if d.get("pretrain") else None,
            data_source=d.get("data_source"),
        )
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{run_dir / 'run.json'} is malformed ({e!r}); re-create the run") from e


def prepare_for_run(info: RunInfo, data_root: str | Path | None = None, raw: WindowSet | None = None) -> Prepared:
    """The run's own data (from `data_root`, else where run.json says it was found, else the usual places), split
    and normalisation; refuses data whose modalities differ from the run's."""
    prep = prepare(info.choice, run_data_root(info, data_root) if raw is None else None, norm=info.norm, raw=raw)
    if prep.ws.specs != info.specs:
        raise CheckpointError(
            f"the data's modalities {[s.to_dict() for s in prep.ws.specs]} differ from the run's "
            f"{[s.to_dict() for s in info.specs]}"
        )
    return prep


def save_net(path: Path, net: CroSSLNet) -> None:
    save_state(path, {"state": net.state_dict(), "modalities": json.dumps([s.to_dict() for s in net.specs]),
                      "n_classes": net.n_classes})


def load_net(path: Path, info: RunInfo) -> CroSSLNet:
    """A network of the run's shape with weights from `path`; refuses weights made for other modalities."""
    state = load_state(path)
    try:
        specs = tuple(ModalitySpec.from_dict(s) for s in json.loads(state["modalities"]))
        n_classes = int(state["n_classes"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a crossl-edge network checkpoint ({e!r})") from e
    if specs != info.specs or n_classes != len(info.class_names):
        raise CheckpointError(
            f"{path} was made for modalities {[s.name for s in specs]} ({n_classes} classes), "
            f"the run has {[s.name for s in info.specs]} ({len(info.class_names)} classes)"
        )
    net = info.new_net()
    try:
        net.load_state_dict(state["state"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the run's network configuration: {e}") from e
    return net


def run_pretraining(
    run_dir: Path, prep: Prepared, model_cfg: ModelConfig, cfg: PretrainConfig, placement: Placement, progress: bool = True
) -> tuple[CroSSLNet, PretrainResult]:
    """Pretrain on every training window (labelled or not); writes run.json, the log and backbone.pt."""
    run_dir = Path(run_dir)
    if (run_dir / "run.json").is_file():
        old = load_json(run_dir / "run.json")
        if old.get("data") != prep.choice.to_dict() or old.get("modalities") != [s.to_dict() for s in prep.ws.specs]:
            raise CheckpointError(f"{run_dir} holds a run on other data; pick another --run folder or delete it")
        as_json = json.loads(json.dumps({"model": model_cfg.to_dict(), "pretrain": cfg.to_dict()}))
        if {"model": old.get("model"), "pretrain": old.get("pretrain")} != as_json:
            raise CheckpointError(
                f"{run_dir} holds a run with other model or pretraining settings (its models were trained on that "
                "backbone); pick another --run folder or delete it"
            )
    check_enough_windows(len(prep.train), cfg, placement)  # before anything is written: a retry must not be refused
    if placement.is_main:
        write_run_json(run_dir, prep, model_cfg, cfg)
    torch.manual_seed(cfg.seed)  # the same initial weights on every DDP rank
    net = CroSSLNet(prep.ws.specs, len(prep.ws.class_names), model_cfg).to(placement.device)
    train = prep.tensors(prep.train, placement.device)
    result = pretrain(net.fit_window_floors(train), train, cfg, placement, run_dir / CHECKPOINT, progress)
    if placement.is_main:
        _write_pretrained(run_dir, net, result)
    return net, result


def _write_pretrained(run_dir: Path, net: CroSSLNet, result: PretrainResult, run_json: dict | None = None) -> None:
    """The loss log and backbone.pt of a finished pretraining (and run.json, given last: a folder with run.json
    and no checkpoint is a finished run); the resumable checkpoint goes."""
    with open(run_dir / "pretrain_log.jsonl", "w") as f:
        for row in result.history:
            f.write(json.dumps(row) + "\n")
    save_net(run_dir / "backbone.pt", net.cpu())
    if run_json is not None:
        save_json(run_dir / "run.json", run_json)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)


def label_budget(prep: Prepared, fraction: float | None, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of the labelled training windows a few-label experiment may use (stratified)."""
    labelled = prep.labelled(prep.train)
    chosen = sample_labels(prep.ws.y[labelled], fraction=fraction, per_class=per_class, seed=seed)
    return labelled[chosen]


def fit_classifier(
    net: CroSSLNet, prep: Prepared, train_idx: np.ndarray, cfg: FinetuneConfig, placement: Placement, progress: bool = True
) -> FitResult:
    val = prep.labelled(prep.val)
    return train_classifier(
        net,
        prep.tensors(train_idx, placement.device),
        prep.ws.y[train_idx],
        prep.tensors(val, placement.device),
        prep.ws.y[val],
        cfg,
        placement,
        progress,
    )


def heldout_scores(net: CroSSLNet, prep: Prepared, all_subsets: bool = True) -> dict[str, float]:
    """Test macro-F1 keyed by modality subset ("acc+bvp+eda+temp" = all present)."""
    test = prep.labelled(prep.test)
    x = prep.tensors(test, next(net.parameters()).device)
    subsets = None if all_subsets else [net.names]
    return evaluate_subsets(net, x, prep.ws.y[test], subsets)


def save_model(
    run_dir: Path, tag: str, net: CroSSLNet, cfg: FinetuneConfig, n_labelled: int, fit: FitResult, scores: dict, **extra
) -> None:
    """model_<tag>.pt and model_<tag>.json: the weights, and how they were made and scored."""
    save_net(Path(run_dir) / f"model_{tag}.pt", net.cpu())
    save_json(
        Path(run_dir) / f"model_{tag}.json",
        {
            "config": cfg.to_dict(), "labelled_windows": int(n_labelled), "val_macro_f1": fit.best_val_f1,
            "best_step": fit.best_step, "steps": fit.steps, "seconds": fit.seconds, "test_macro_f1": scores, **extra,
        },
    )


def record_metrics(run_dir: Path, key: str, scores: dict[str, float], test_windows: int, **extra) -> None:
    """Add or update one entry of <run>/metrics.json, keeping the others. When `key` names a model file of the
    run, the entry records its sha256, and scores of the same file on the same test windows are merged into the
    entry (an all-present-only evaluation keeps the per-subset scores stored before it); anything else replaces it.
    `extra` fields (a reference's method and label budget) are stored in the entry as they are."""
    from crossl_edge.runtime.bundle import sha256_file

    path = Path(run_dir) / "metrics.json"
    metrics = load_json(path) if path.is_file() else {}
    model = Path(run_dir) / key
    entry = {"test_windows": int(test_windows), "macro_f1": dict(scores), **extra}
    if model.is_file():
        entry["model_sha256"] = sha256_file(model)
        old = metrics.get(key, {})
        if old.get("model_sha256") == entry["model_sha256"] and old.get("test_windows") == entry["test_windows"]:
            entry["macro_f1"] = {**old.get("macro_f1", {}), **scores}
    metrics[key] = entry
    save_json(path, metrics)


def publish_default_model(run_dir: Path, tag: str) -> None:
    """Make model_<tag> the run's default classifier (what export takes without --checkpoint)."""
    shutil.copyfile(Path(run_dir) / f"model_{tag}.pt", Path(run_dir) / "model.pt")
    shutil.copyfile(Path(run_dir) / f"model_{tag}.json", Path(run_dir) / "model.json")


def train_and_score(
    backbone: CroSSLNet, prep: Prepared, idx: np.ndarray, cfg: FinetuneConfig, placement: Placement, progress: bool = True
) -> tuple[CroSSLNet, FitResult, dict[str, float]]:
    """One downstream method: a copy of the pretrained `backbone` (probe, finetune) or a fresh network of the
    same shape seeded with cfg.seed (scratch, random_probe), trained on windows `idx`, scored on every sensor subset."""
    if cfg.mode in FRESH_MODES:
        torch.manual_seed(cfg.seed)
        net = CroSSLNet(backbone.specs, backbone.n_classes, backbone.cfg).fit_window_floors(prep.tensors(prep.train))
    else:
        net = copy.deepcopy(backbone)
    fit = fit_classifier(net.to(placement.device), prep, idx, cfg, placement, progress)
    return net, fit, heldout_scores(net, prep)


def stats_baseline(prep: Prepared, idx: np.ndarray) -> tuple[dict[str, float], float, float]:
    """Window statistics + logistic regression on the same labelled windows, C chosen on validation windows.

    Returns (test macro-F1 per sensor subset, chosen C, validation macro-F1)."""
    model, c, val = fit_stats_baseline(prep.ws.subset(idx), prep.ws.subset(prep.labelled(prep.val)))
    return stats_baseline_scores(model, prep.ws.subset(prep.labelled(prep.test))), c, val


def continue_on_recordings(
    source: Path, run_dir: Path, recordings: Path, cfg: PretrainConfig, placement: Placement, mix: bool = False,
    progress: bool = True,
) -> tuple[CroSSLNet, PretrainResult, int]:
    """CroSSL pretraining continued from `source`'s backbone on the unlabelled windows of bridge recordings.

    The new run keeps the source run's data choice, split, modalities and normalisation (so fine-tuning,
    evaluation and export work on it as on the source, with the recordings' sensors in the encoders); the
    recordings are cut into the source's windows and normalised with its training statistics. `mix` adds the
    source's own training windows, so the encoders do not drift away from them. Returns the network, the
    pretraining result and the number of recording windows."""
    from crossl_edge.data import DATASETS, load_byo, make_windows

    info = read_run(source)
    if not (Path(source) / "backbone.pt").is_file():
        raise CheckpointError(f"{source} has no backbone.pt to continue from; pretrain it first")
    if Path(run_dir).resolve() == Path(source).resolve():
        raise CheckpointError("--run must be a new folder: continued pretraining never overwrites the source run")
    recs, _, _ = load_byo(recordings)
    window_s = info.specs[0].window_seconds
    hop = info.choice.hop_s or DATASETS[info.choice.dataset].hop_s or window_s  # the source's own hop
    ws = make_windows(recs, info.specs, window_s, hop, info.class_names, skip_short=True)
    if len(ws) == 0:
        raise DataError(f"{recordings} holds no recording as long as one {window_s:g} s window of {', '.join(s.name for s in info.specs)}")
    x = info.norm.apply(ws).x
    if mix:
        prep = prepare_for_run(info)
        x = {k: np.concatenate([x[k], prep.ws.x[k][prep.train]]) for k in x}
    net = load_net(Path(source) / "backbone.pt", info).to(placement.device)
    d = load_json(Path(source) / "run.json")
    d["pretrain"] = cfg.to_dict()
    d["continued"] = {"from": str(source), "recordings": str(recordings), "recording_windows": len(ws),
                      "recording_files": len(recs), "mixed_with_source_training_windows": mix}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(placement.device) for k, v in x.items()}
    result = pretrain(net, tensors, cfg, placement, run_dir / CHECKPOINT, progress)
    if placement.is_main:
        _write_pretrained(run_dir, net, result, d)
    return net, result, len(ws)
