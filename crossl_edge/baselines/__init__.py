"""Non-learned-representation baselines that learned results are compared against (numpy only).

The MiniRocket reference (`crossl_edge.baselines.minirocket`, the `minirocket` extra) is not re-exported here:
import it by its module path, so that importing this package never loads it.
"""

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
