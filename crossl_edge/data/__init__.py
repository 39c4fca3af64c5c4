"""Data layer: loaders for the real data sets and bring-your-own files, multi-rate windowing,
subject-wise splits, normalisation statistics and checksummed downloads.

numpy and the standard library only (no torch): it runs on the edge device too. Importing it reads
no files and touches no network.

Typical use:

    from crossl_edge.data import load_windows, subject_splits, NormStats
    ws = load_windows("stress-predict")                 # 10 s windows, 5 s hop
    split = subject_splits(ws.subject, 5, 0.1, 0.2, seed=0)[0]
    train, val, test = split.indices(ws)
    stats = NormStats.fit(ws.subset(train))
"""

from crossl_edge.data.byo import ByoConfig, load_byo, read_byo_config, save_byo_dataset, save_byo_recording
from crossl_edge.data.cache import cache_root, datasets_cache_dir
from crossl_edge.data.download import ARCHIVES, Archive, fetch_archive, fetch_dataset, tree_digest
from crossl_edge.data.lis_emg_imu import HELD_OUT_DAY as LIS_HELD_OUT_DAY
from crossl_edge.data.lis_emg_imu import lis_specs, load_lis_emg_imu
from crossl_edge.data.locate import find_dataset_root
from crossl_edge.data.normalize import NormStats
from crossl_edge.data.registry import DATASETS, DatasetInfo, load_windows
from crossl_edge.data.splits import (
    Split,
    check_no_leak,
    leave_group_out,
    sample_labels,
    stratified_kfold,
    subject_splits,
)
from crossl_edge.data.stress_predict import load_stress_predict, stress_predict_specs, stress_predict_subjects
from crossl_edge.data.types import DataError, Recording, WindowSet
from crossl_edge.data.windowing import WindowReport, make_windows, make_windows_with_report, window_labels

__all__ = [
    "ARCHIVES",
    "Archive",
    "ByoConfig",
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "LIS_HELD_OUT_DAY",
    "NormStats",
    "Recording",
    "Split",
    "WindowReport",
    "WindowSet",
    "cache_root",
    "check_no_leak",
    "datasets_cache_dir",
    "fetch_archive",
    "fetch_dataset",
    "find_dataset_root",
    "leave_group_out",
    "lis_specs",
    "load_byo",
    "load_lis_emg_imu",
    "load_stress_predict",
    "load_windows",
    "make_windows",
    "make_windows_with_report",
    "read_byo_config",
    "sample_labels",
    "save_byo_dataset",
    "save_byo_recording",
    "stratified_kfold",
    "stress_predict_specs",
    "stress_predict_subjects",
    "subject_splits",
    "tree_digest",
    "window_labels",
]
