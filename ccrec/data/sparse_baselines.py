"""Popularity and first-order Markov baselines for large catalogs (no [V, V] or [B, V] array).

`popularity_hit_rate` and `markov_hit_rate` give the numbers of their namesakes in
`ccrec.data.synthetic` (the same scores, the same tie-breaking, compared in float64),
but work from sorted arrays and the observed transitions only, so a million-item
catalog takes seconds. `group_markov_hit_rate` pools the transition counts over known
item groups (the latent groups of `ccrec.data.synthetic_catalogs`): it shows how much a
model that shares statistics between similar items can gain from the structure.

A hit at k: fewer than k items (ids >= 1) score strictly higher than the target.
"""

from __future__ import annotations

import numpy as np

from ccrec.data.dataset import Examples, SessionDataset

_CELLS = 1 << 22  # expanded (example, successor) pairs or [rows, V] cells per batch


def _tie_break(ds: SessionDataset) -> np.ndarray:
  """float64 [V + 1]: popularity in [0, 1) minus a tiny id term, as `synthetic` breaks ties."""
  return ds.item_counts / (ds.item_counts.max() + 1.0) - np.arange(ds.num_items + 1) * 1e-9


def _last_items(examples: Examples) -> np.ndarray:
  return examples.prefixes.items[examples.prefixes.offsets[1:] - 1].astype(np.int64)


def popularity_hit_rate(ds: SessionDataset, k: int = 10, split: str = "test") -> float:
  """HR@k of recommending the most frequent training items (ties towards smaller ids)."""
  examples = getattr(ds, split)
  scores = ds.item_counts.astype(np.float64) - np.arange(ds.num_items + 1) * 1e-9
  ordered = np.sort(scores[1:])
  higher = len(ordered) - np.searchsorted(ordered, scores[examples.targets], side="right")
  return float(np.count_nonzero(higher < k)) / max(len(examples), 1)


def transitions(ds: SessionDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The observed first-order transitions of the training sessions, grouped by source.

  Returns (offsets int64 [V + 2], successors int64 [P], counts float64 [P]): the
  successors of item a are successors[offsets[a]:offsets[a + 1]] (sorted), seen
  counts[...] times.
  """
  seqs, v = ds.train, ds.num_items + 1
  same = np.ones(len(seqs.items), dtype=bool)
  same[seqs.offsets[1:] - 1] = False  # no pair across a session boundary
  pairs = np.flatnonzero(same[:-1]) if len(seqs.items) else np.zeros(0, np.int64)
  keys = seqs.items[pairs].astype(np.int64) * v + seqs.items[pairs + 1]
  keys, counts = np.unique(keys, return_counts=True)
  offsets = np.searchsorted(keys // v, np.arange(v + 1))
  return offsets, keys % v, counts.astype(np.float64)


def markov_hit_rate(ds: SessionDataset, k: int = 10, split: str = "test") -> float:
  """HR@k of first-order transition counts from the last click, popularity breaking ties.

  Score of v after a: count(a -> v) + tie_break(v). Items never seen after a score
  tie_break(v) alone, so the items above the target are counted in two parts: among
  a's successors directly, and among all items through the sorted tie-break values
  (minus the successors already counted).
  """
  examples = getattr(ds, split)
  offsets, succ, counts = transitions(ds)
  v = ds.num_items + 1
  tb = _tie_break(ds)
  sorted_tb = np.sort(tb[1:])
  last, target = _last_items(examples), examples.targets.astype(np.int64)
  # count(last -> target): a search among all (source, successor) keys.
  keys = np.repeat(np.arange(v), np.diff(offsets)) * v + succ
  at = np.minimum(np.searchsorted(keys, last * v + target), max(len(keys) - 1, 0))
  found = (keys[at] == last * v + target) if len(keys) else np.zeros(len(last), bool)
  s_target = np.where(found, counts[at] if len(keys) else 0.0, 0.0) + tb[target]
  # Every item scored by its tie-break alone (no transition from last) ...
  higher = len(sorted_tb) - np.searchsorted(sorted_tb, s_target, side="right")
  # ... then last's successors corrected: counted with their counts, not without.
  lo, degree = offsets[last], offsets[last + 1] - offsets[last]
  cum = np.concatenate([[0], np.cumsum(degree)])
  n, start = len(last), 0
  while start < n:
    stop = max(start + 1, int(np.searchsorted(cum, cum[start] + _CELLS, side="right")) - 1)
    rows = np.repeat(np.arange(stop - start), degree[start:stop])
    idx = lo[start:stop][rows] + np.arange(len(rows)) - (cum[start:stop] - cum[start])[rows]
    s_row, sv = s_target[start:stop][rows], succ[idx]
    above = (counts[idx] + tb[sv] > s_row).astype(np.int64) - (tb[sv] > s_row)
    higher[start:stop] += np.bincount(rows, weights=above, minlength=stop - start).astype(np.int64)
    start = stop
  return float(np.count_nonzero(higher < k)) / max(n, 1)


def group_markov_hit_rate(
    ds: SessionDataset, groups: np.ndarray, k: int = 10, split: str = "test"
) -> float:
  """HR@k of transitions pooled over item groups: P(group of v | group of a) x P(v | its group).

  `groups` int [V + 1] (index 0 unused) assigns each item a group. Counts are add-one
  smoothed within a group; the tie-break of `markov_hit_rate` breaks ties.
  """
  examples = getattr(ds, split)
  groups = np.asarray(groups, np.int64).copy()
  groups[0] = 0
  num_groups = int(groups[1:].max()) + 1
  offsets, succ, counts = transitions(ds)
  src = np.repeat(np.arange(ds.num_items + 1), np.diff(offsets))
  pooled = np.zeros((num_groups, num_groups))
  np.add.at(pooled, (groups[src], groups[succ]), counts)
  share = ds.item_counts + 1.0
  share = share / np.bincount(groups[1:], weights=share[1:], minlength=num_groups)[groups]
  tb = _tie_break(ds) * 1e-6
  last, target = _last_items(examples), examples.targets.astype(np.int64)
  rows = max(1, _CELLS // (ds.num_items + 1))
  hits = 0
  for lo in range(0, len(last), rows):
    scores = pooled[groups[last[lo : lo + rows]]][:, groups] * share + tb
    scores[:, 0] = -np.inf
    t = target[lo : lo + rows]
    hits += int(((scores > scores[np.arange(len(t)), t][:, None]).sum(axis=1) < k).sum())
  return hits / max(len(last), 1)
