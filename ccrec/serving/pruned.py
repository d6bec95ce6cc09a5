"""Exact top-k through compositional codes without scoring every item (after RecJPQPrune).

For a session vector s the code tables are T[m, k] = <s, C_m[k]> and an item's score
is sum_m T[m, codes[m, v]] (`scoring.CodeScorer`). Group the items by their codeword
in one codebook p, the pivot: group g holds the items with codes[p, v] == g. Offline,
the index records which codewords of every other codebook occur in each group, so a
group's scores are bounded by

  UB(g) = T[p, g] + sum_{m != p} max { T[m, k] : codeword k of codebook m occurs in g }

(Petrov & Macdonald 2025 bound the other codebooks by their global maximum; the
per-group maximum is tighter and costs M*K*K per query). Groups are scored in
decreasing order of UB, the first until they hold k items, the rest a batch at a
time; the k-th best score found so far, theta, only grows, and the search stops at
the first group with UB < theta: no item left can reach theta, so none can enter the
top k or tie with it. The bound carries a margin for float32 rounding, the scores are
summed in the order `CodeScorer.score` sums them, and the final selection breaks ties
by the smaller id, so the result is the full scan's, element for element.

The pivot is chosen per query: the codebook whose table has the widest range (largest
max - mean), where the bounds separate groups most. Pruning pays when k is small next
to V and the codes are clustered (items of a group share codewords, as learned codes
do); on uniformly random codes the bounds are loose and most groups get scored.
`PrunedIndex.top_k` falls back to the full scan when k leaves nothing to prune.
"""

from __future__ import annotations

import numpy as np

from ccrec.serving.topk import exact_top
from ccrec.serving.topk import top_k as full_top_k

_EPS32 = float(np.finfo(np.float32).eps)
_PRESENCE_CAP = 1 << 26  # booleans of per-group codeword presence kept per pivot


class PrunedIndex:
  """Per-pivot item orders and codeword presence for pruned top-k over codes.

  Args:
    codes: uint8/uint16 [M, V+1], codebook-major; column 0 is padding (never returned
      unless k exceeds the number of items, as in the full scan).
    codebook_size: K.
    batch_items: items scored per batch after the first one (a speed knob only).
  """

  def __init__(self, codes: np.ndarray, codebook_size: int, batch_items: int = 1 << 15):
    codes = np.ascontiguousarray(codes)
    m, rows = codes.shape
    self.codes, self.num_rows, self.k_size = codes, rows, int(codebook_size)
    self.batch_items = int(batch_items)
    items = codes[:, 1:].astype(np.int64)  # [M, V]
    # Per-group codeword presence costs K*M*K bytes per pivot: beyond the cap (large K)
    # the other codebooks are bounded by their global maxima instead.
    with_presence = self.k_size * m * self.k_size <= _PRESENCE_CAP
    self.orders, self.starts, self.sorted_codes, self.present = [], [], [], []
    for p in range(m):
      order = np.argsort(items[p], kind="stable")
      self.orders.append((order + 1).astype(np.int64))  # item ids
      self.starts.append(np.searchsorted(items[p][order], np.arange(self.k_size + 1)))
      self.sorted_codes.append(np.ascontiguousarray(codes[:, 1:][:, order]))  # [M, V]
      present = None
      if with_presence:  # present[q, g, c]: codeword c of codebook q occurs in group g
        present = np.zeros((m, self.k_size, self.k_size), bool)
        for q in range(m):
          present[q, items[p], items[q]] = True
      self.present.append(present)

  def _bounds(self, tables: np.ndarray, p: int) -> np.ndarray:
    """float64 [K]: UB of every group of pivot p (-inf for empty groups), with a margin."""
    t = tables.astype(np.float64)
    nonempty = np.diff(self.starts[p]) > 0
    if self.present[p] is None:
      ub = t[p] + (t.max(axis=1).sum() - t[p].max())
    else:
      # Per codebook, the first codeword in decreasing T that occurs in the group.
      ub = np.zeros(self.k_size)
      for q, order in enumerate(np.argsort(-tables, axis=1, kind="stable")):
        first = np.argmax(self.present[p][q][:, order], axis=1)
        ub += t[q, order[first]]
    ub = np.where(nonempty, ub, -np.inf)
    margin = 4.0 * len(t) * _EPS32 * np.abs(t).max(axis=1).sum()
    return ub + margin

  def _score(self, tables: np.ndarray, p: int, lo: int, hi: int) -> np.ndarray:
    """float32 scores of the items at sorted positions lo..hi of pivot p (summed in
    `CodeScorer.score`'s order)."""
    codes = self.sorted_codes[p]
    out = np.take(tables[0], codes[0, lo:hi].astype(np.intp))
    for m in range(1, len(tables)):
      out += np.take(tables[m], codes[m, lo:hi].astype(np.intp))
    return out

  def pivot(self, tables: np.ndarray) -> int:
    return int(np.argmax(tables.max(axis=1) - tables.mean(axis=1)))

  def search(
      self, tables: np.ndarray, k: int, exclude: np.ndarray | None = None, pivot: int | None = None
  ) -> tuple[np.ndarray, np.ndarray, int]:
    """Top k from code tables [M, K] float32: (ids int64 [k], values [k], items scored).

    `exclude` (item ids) are never returned. Equals `scoring.top_k` of the full scores
    with the excluded ids set to -inf, including ties (by the smaller id) and k larger
    than the number of items (then it is that full scan).
    """
    tables = np.ascontiguousarray(tables, dtype=np.float32)
    excluded = (
        np.zeros(0, np.int64) if exclude is None else np.unique(np.asarray(exclude, np.int64))
    )
    excluded = excluded[(excluded > 0) & (excluded < self.num_rows)]
    k = min(int(k), self.num_rows)
    if k <= 0:
      return np.zeros(0, np.int64), np.zeros(0, np.float32), 0
    if k > self.num_rows - 1 - len(excluded):  # nothing to prune: -inf fillers are returned
      return (*self.full_scan(tables, k, excluded), self.num_rows - 1)
    p = self.pivot(tables) if pivot is None else int(pivot)
    ub = self._bounds(tables, p)
    groups = np.argsort(-ub, kind="stable")
    ub_sorted = ub[groups]
    starts = self.starts[p]
    sizes = starts[groups + 1] - starts[groups]
    ids = np.zeros(0, np.int64)
    vals = np.zeros(0, np.float32)
    theta = -np.inf
    scored = 0
    g = 0
    while g < len(groups):
      # The next groups that may still hold a top-k item: UB >= theta (a prefix of the rest).
      end = (
          int(np.searchsorted(-ub_sorted, -theta, side="right")) if len(ids) >= k else (len(groups))
      )
      if end <= g:
        break
      budget = max(self.batch_items, k) if len(ids) >= k else k
      stop, total = g, 0
      while stop < end and (total < budget or stop == g):
        total += int(sizes[stop])
        stop += 1
      batch_ids, batch_vals = [ids], [vals]
      for gr in groups[g:stop]:
        lo, hi = int(starts[gr]), int(starts[gr + 1])
        if hi > lo:
          batch_ids.append(self.orders[p][lo:hi])
          batch_vals.append(self._score(tables, p, lo, hi))
      scored += total
      g = stop
      cand_ids, cand_vals = np.concatenate(batch_ids), np.concatenate(batch_vals)
      if len(excluded):
        cand_vals = np.where(np.isin(cand_ids, excluded), -np.inf, cand_vals).astype(np.float32)
      ids, vals = exact_top(cand_ids, cand_vals, k)
      if len(ids) >= k:
        theta = float(vals[k - 1])
    return ids.astype(np.int64), vals, scored

  def top_k(
      self, tables: np.ndarray, k: int, exclude: np.ndarray | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [k], values [k]) as `search`."""
    return self.search(tables, k, exclude)[:2]

  def full_scan(
      self, tables: np.ndarray, k: int, exclude: np.ndarray | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every item scored (as `CodeScorer.score`), then `scoring.top_k`."""
    scores = np.empty(self.num_rows, np.float32)
    scores[1:] = tables[0][self.codes[0, 1:]]
    for m in range(1, len(tables)):
      scores[1:] += tables[m][self.codes[m, 1:]]
    scores[0] = -np.inf
    if exclude is not None and len(exclude):
      scores[np.asarray(exclude, np.int64)] = -np.inf
    return full_top_k(scores, k)
