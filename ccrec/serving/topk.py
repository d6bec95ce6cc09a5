"""Exact top k of numpy score arrays: by decreasing score, ties by the smaller id.

Numpy only (part of the dependency-free runtime): `top_k` for one score vector,
`top_k_columns` for item-major [N, B] scores, `exact_top` for a candidate set.
"""

from __future__ import annotations

import math

import numpy as np


def exact_top(ids: np.ndarray, vals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Top k of candidates (ids, vals) by (-value, id)."""
  if len(vals) > k:
    kth = np.partition(vals, len(vals) - k)[len(vals) - k]
    keep = vals >= kth
    ids, vals = ids[keep], vals[keep]
  order = np.lexsort((ids, -vals))[:k]
  return ids[order], vals[order]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Exact top k of scores [N]: (ids int64 [k], values [k]), by decreasing score, ties by id.

  The scores are cut into blocks; the k-th largest block maximum t is a lower
  bound of the k-th largest score (k blocks each hold an element >= t), so
  only blocks whose maximum is >= t can hold the top k (ties included).
  """
  scores = np.asarray(scores)
  n = len(scores)
  k = min(int(k), n)
  if k <= 0:
    return np.zeros(0, np.int64), scores[:0]
  size = max(64, math.isqrt(n))
  blocks = n // size
  if blocks <= 2 * k:
    return exact_top(np.arange(n, dtype=np.int64), scores, k)
  maxima = scores[: blocks * size].reshape(blocks, size).max(axis=1)
  threshold = np.partition(maxima, blocks - k)[blocks - k]
  chosen = np.flatnonzero(maxima >= threshold)
  ids = (chosen[:, None] * size + np.arange(size)).reshape(-1)
  ids = np.concatenate([ids, np.arange(blocks * size, n)])
  return exact_top(ids, scores[ids], k)


def top_k_columns(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Item-major scores [N, B] -> (ids int64 [B, k], values [B, k]); column b as `top_k`."""
  scores = np.asarray(scores)
  n, b = scores.shape
  k = min(int(k), n)
  ids = np.empty((b, k), np.int64)
  vals = np.empty((b, k), scores.dtype)
  size = max(64, math.isqrt(n))
  blocks = n // size
  if blocks <= 2 * k:
    for c in range(b):
      ids[c], vals[c] = exact_top(np.arange(n, dtype=np.int64), scores[:, c], k)
    return ids, vals
  maxima = scores[: blocks * size].reshape(blocks, size, b).max(axis=1)  # [blocks, B]
  thresholds = np.partition(maxima, blocks - k, axis=0)[blocks - k]  # [B]
  tail = np.arange(blocks * size, n)
  offsets = np.arange(size)
  for c in range(b):
    chosen = np.flatnonzero(maxima[:, c] >= thresholds[c])
    cand = np.concatenate([(chosen[:, None] * size + offsets).reshape(-1), tail])
    ids[c], vals[c] = exact_top(cand, scores[cand, c], k)
  return ids, vals
