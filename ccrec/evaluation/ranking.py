"""Target ranks and the rank metrics of single examples (docs/DESIGN.md, "Metric keys").

Rank rule: rank = number of items in 1..V (padding id 0 excluded), other than the
target, whose score is higher than or equal to the target's: ties count AGAINST the
target (items sharing a full compositional code score exactly alike, and must not be
rewarded). Rank 0 is a hit at every k. With rank r < k:
  HR@k = 1, MRR@k = 1 / (r + 1), NDCG@k = 1 / log2(r + 2)   (0 otherwise).
The mean of an example's values over a split is the reported metric.

Numpy only (the numpy runtime's evaluation uses it); `target_rank` also runs on jax
arrays inside jitted code (`xp=jax.numpy`, as ccrec.evaluation.metrics does).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

KS = (5, 10, 20)  # the metric cut-offs reported everywhere
_METRIC = re.compile(r"^(HR|MRR|NDCG)@([1-9][0-9]*)$")


def target_rank(scores: Any, target: Any, xp: Any = np) -> Any:
  """Exact rank of each target among all items.

  Args:
    scores: [B, V+1] scores of every id (column 0, padding, is ignored whatever its value).
    target: [B] int item ids in 1..V (filler rows may hold anything; give them a zero
      weight downstream).
    xp: the array module of `scores`: numpy, or jax.numpy.

  Returns:
    int32 [B]: number of other items in 1..V scoring higher than or equal to the target.
  """
  target = target.astype(xp.int32)
  own = xp.take_along_axis(scores, target[:, None], axis=1)  # [B, 1]
  ids = xp.arange(1, scores.shape[1], dtype=xp.int32)[None, :]
  return xp.sum((scores[:, 1:] >= own) & (ids != target[:, None]), axis=1, dtype=xp.int32)


def per_example(rank: np.ndarray, metric: str) -> np.ndarray:
  """rank int [N] (0 = best) -> float64 [N] values of `metric` ('HR@k', 'MRR@k', 'NDCG@k')."""
  match = _METRIC.match(metric)
  if match is None:
    raise ValueError(f"unknown metric {metric!r}: expected HR@k, MRR@k or NDCG@k with k >= 1")
  rank = np.asarray(rank)
  if rank.ndim != 1 or not np.issubdtype(rank.dtype, np.integer):
    raise ValueError(f"ranks must be a 1-d integer array, got {rank.dtype} of shape {rank.shape}")
  if rank.size and rank.min() < 0:
    raise ValueError(f"ranks must be >= 0, got a minimum of {rank.min()}")
  name, k = match.group(1), int(match.group(2))
  r = rank.astype(np.float64)
  hit = rank < k
  if name == "HR":
    return hit.astype(np.float64)
  if name == "MRR":
    return np.where(hit, 1.0 / (r + 1.0), 0.0)
  return np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)


def metrics_from_ranks(rank: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
  """{"count", "HR@k", "MRR@k", "NDCG@k" for k in ks}: means over the examples (NaN if none)."""
  rank = np.asarray(rank)
  out: dict[str, float] = {"count": float(len(rank))}
  for k in ks:
    for name in ("HR", "MRR", "NDCG"):
      values = per_example(rank, f"{name}@{k}")
      out[f"{name}@{k}"] = float(values.mean()) if len(values) else float("nan")
  return out
