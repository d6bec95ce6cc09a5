"""ccrec.data: readers, preprocessing recipes, protocols, batches, synthetic data.

Pure numpy (importing it never imports jax), so data tools and the serving
runtime stay light. Contracts: docs/DESIGN.md; sources of every dataset: docs/data.md.
"""

from ccrec.data.batching import (
    hot_mask,
    num_batches,
    num_windows,
    popularity_ranking,
    prefix_batches,
    steps_per_epoch,
    window_batches,
    windows,
)
from ccrec.data.dataset import (
    Examples,
    Sequences,
    SessionDataset,
    check_replace,
    load,
    make_dataset,
    prefix_augment,
    save,
    statistics,
    statistics_table,
    truncate,
)
from ccrec.data.errors import DataError
from ccrec.data.recipes import ClickLog, Recipe
from ccrec.data.registry import DATASETS, load_dataset, prepare
from ccrec.data.safe_pickle import from_pickles
from ccrec.data.synthetic import (
    markov_hit_rate,
    popularity_hit_rate,
    synthetic_dataset,
    synthetic_sessions,
)

__all__ = [
    "ClickLog",
    "DATASETS",
    "DataError",
    "Examples",
    "Recipe",
    "Sequences",
    "SessionDataset",
    "check_replace",
    "from_pickles",
    "hot_mask",
    "load",
    "load_dataset",
    "make_dataset",
    "markov_hit_rate",
    "num_batches",
    "num_windows",
    "popularity_hit_rate",
    "popularity_ranking",
    "prefix_augment",
    "prefix_batches",
    "prepare",
    "save",
    "statistics",
    "statistics_table",
    "steps_per_epoch",
    "synthetic_dataset",
    "synthetic_sessions",
    "truncate",
    "window_batches",
    "windows",
]
