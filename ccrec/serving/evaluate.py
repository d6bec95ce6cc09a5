"""Accuracy of a loaded bundle, computed by the numpy runtime (no jax).

Same definitions as ccrec.evaluation (`ccrec.evaluation.ranking`, docs/DESIGN.md): rank =
number of other non-padding items scoring higher than or equal to the target (ties count
against it); HR@k, MRR@k and NDCG@k = 1/log2(rank + 2) for rank < k; every example counted
once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ccrec.evaluation.ranking import KS, metrics_from_ranks, target_rank
from ccrec.serving.runtime import Recommender


def ranks(
    rec: Recommender, prefixes: Sequence[np.ndarray], targets: np.ndarray, batch_size: int = 256
) -> np.ndarray:
  """int64 [N]: rank of each target given its prefix (dense ids, non-empty prefixes)."""
  targets = np.asarray(targets, np.int64)
  out = np.empty(len(targets), np.int64)
  for lo in range(0, len(targets), batch_size):
    hi = min(lo + batch_size, len(targets))
    batch = [np.asarray(p, np.int64)[-rec.max_len :] for p in prefixes[lo:hi]]
    if any(len(p) == 0 for p in batch):
      raise ValueError("evaluation prefixes must be non-empty")
    out[lo:hi] = target_rank(rec.scores(rec.encode_dense(batch)), targets[lo:hi])
  return out


def evaluate(
    rec: Recommender,
    prefixes: Sequence[np.ndarray],
    targets: np.ndarray,
    ks: Sequence[int] = KS,
    batch_size: int = 256,
) -> dict[str, float]:
  """HR/MRR/NDCG@k and count of (prefix -> target) examples (dense ids)."""
  return metrics_from_ranks(ranks(rec, prefixes, targets, batch_size), ks)
