"""Non-learned-representation baselines that learned results are compared against (numpy only)."""

from crossl_edge.baselines.stats_lr import (
    BASE_STATS,
    EMG_STATS,
    LogisticRegression,
    feature_names,
    fit_stats_baseline,
    modality_columns,
    modality_stats,
    multinomial_objective,
    stats_baseline_scores,
    window_features,
)

__all__ = [
    "BASE_STATS",
    "EMG_STATS",
    "LogisticRegression",
    "feature_names",
    "fit_stats_baseline",
    "modality_columns",
    "modality_stats",
    "multinomial_objective",
    "stats_baseline_scores",
    "window_features",
]
