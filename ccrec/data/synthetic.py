"""Synthetic sessions with a planted sequential signal, and two reference baselines.

Items have power-law popularity (Zipf exponent `zipf`, ids shuffled so that id
and popularity are unrelated) and each item has `successors` fixed next items
drawn from the same popularity. A session starts with a popular item; each
next click follows one of the previous item's successors with probability
`follow`, else is a fresh popular item. A model that reads the last click can
therefore beat popularity; `markov_hit_rate` (first-order transition counts)
does, `popularity_hit_rate` is the floor.

Everything is vectorised over sessions (one numpy step per position), so
millions of items and sessions take seconds.
"""

from __future__ import annotations

import numpy as np

from ccrec.data.dataset import Examples, Sequences, SessionDataset, make_dataset, prefix_augment
from ccrec.data.errors import DataError


def _popularity(num_items: int, zipf: float, rng: np.random.Generator) -> np.ndarray:
  """float64 [num_items + 1] cumulative distribution over ids 1..V (index 0: 0)."""
  weights = np.arange(1, num_items + 1, dtype=np.float64) ** -zipf
  weights = weights[rng.permutation(num_items)]
  cdf = np.zeros(num_items + 1)
  np.cumsum(weights / weights.sum(), out=cdf[1:])
  return cdf


def _inverse_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
  """int64 ids in 1..V for uniforms u in [0, 1). Sorted queries keep searchsorted cache-friendly."""
  order = np.argsort(u)
  ids = np.empty(len(u), dtype=np.int64)
  ids[order] = np.searchsorted(cdf, u[order] * cdf[-1], side="right")
  return np.clip(ids, 1, len(cdf) - 1)


def _draw(cdf: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  """int64 [n] ids in 1..V from the popularity cdf."""
  return _inverse_cdf(cdf, rng.random(n))


def _hash_uniform(keys: np.ndarray, seed: int) -> np.ndarray:
  """float64 uniforms in [0, 1), a fixed function of (key, seed) (splitmix64)."""
  with np.errstate(over="ignore"):
    z = keys.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % (1 << 64))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
  return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def synthetic_sessions(
    num_items: int,
    num_sessions: int,
    *,
    seed: int = 0,
    mean_length: float = 6.0,
    max_length: int = 50,
    zipf: float = 1.0,
    successors: int = 4,
    follow: float = 0.7,
    min_length: int = 2,
) -> Sequences:
  """num_sessions sessions: length min_length + Poisson(mean_length - min_length), capped."""
  if num_items < 2:
    raise DataError(f"setting num_items must be >= 2, got {num_items}")
  if num_sessions < 1:
    raise DataError(f"setting num_sessions must be >= 1, got {num_sessions}")
  if not 0.0 <= follow <= 1.0:
    raise DataError(f"setting follow must be in [0, 1], got {follow}")
  if not 1 <= min_length <= mean_length or max_length < min_length:
    raise DataError(
        f"settings need 1 <= min_length <= mean_length and max_length >= min_length, "
        f"got {min_length}, {mean_length}, {max_length}"
    )
  rng = np.random.default_rng(seed)
  cdf = _popularity(num_items, zipf, rng)
  # Successor j of item i is a popularity draw keyed on (i, j): a fixed sparse
  # transition table, computed only for the transitions taken.
  table_seed = int(rng.integers(1 << 62))
  lengths = np.minimum(min_length + rng.poisson(mean_length - min_length, num_sessions), max_length)
  offsets = np.zeros(num_sessions + 1, dtype=np.int64)
  np.cumsum(lengths, out=offsets[1:])
  items = np.zeros(offsets[-1], dtype=np.int32)
  # Position t of every session still that long; sessions sorted by length make
  # the active ones a prefix after sorting.
  order = np.argsort(-lengths, kind="stable")
  prev = _draw(cdf, num_sessions, rng)
  items[offsets[order]] = prev[order]
  prev = prev[order]
  for t in range(1, int(lengths.max())):
    active = int(np.count_nonzero(lengths[order] > t))
    prev = prev[:active]
    fresh = _draw(cdf, active, rng)
    follows = rng.random(active) < follow
    slot = rng.integers(0, successors, active)
    successor = _inverse_cdf(cdf, _hash_uniform(prev * successors + slot, table_seed))
    prev = np.where(follows, successor, fresh)
    items[offsets[order[:active]] + t] = prev
  return Sequences(offsets, items)


def synthetic_dataset(
    num_items: int,
    num_sessions: int,
    *,
    seed: int = 0,
    mean_length: float = 6.0,
    max_length: int = 50,
    zipf: float = 1.0,
    successors: int = 4,
    follow: float = 0.7,
    test_fraction: float = 0.1,
    valid_fraction: float = 0.1,
    max_len: int | None = 50,
) -> SessionDataset:
  """A SessionDataset in the `session` protocol layout from synthetic sessions.

  The last `test_fraction` of the sessions (in generation order, standing for
  time) are test, a seeded `valid_fraction` of the rest valid, both prefix-
  augmented; item ids are 1..num_items (some may never occur).
  """
  if not (0 < test_fraction < 1 and 0 <= valid_fraction < 1):
    raise DataError(
        f"settings test_fraction in (0, 1) and valid_fraction in [0, 1) required, "
        f"got {test_fraction}, {valid_fraction}"
    )
  seqs = synthetic_sessions(
      num_items,
      num_sessions,
      seed=seed,
      mean_length=mean_length,
      max_length=max_length,
      zipf=zipf,
      successors=successors,
      follow=follow,
  )
  num_test = max(1, int(round(num_sessions * test_fraction)))
  rest = num_sessions - num_test
  if rest < 1:
    raise DataError(f"setting num_sessions={num_sessions} leaves no training sessions")
  rng = np.random.default_rng([seed, 1])
  is_valid = np.zeros(rest, dtype=bool)
  is_valid[rng.choice(rest, size=int(round(rest * valid_fraction)), replace=False)] = True
  train = seqs.take(np.flatnonzero(~is_valid))
  valid = prefix_augment(seqs.take(np.flatnonzero(is_valid)), max_len)
  test = prefix_augment(seqs.take(np.arange(rest, num_sessions)), max_len)
  settings = dict(
      num_items=num_items,
      num_sessions=num_sessions,
      seed=seed,
      mean_length=mean_length,
      max_length=max_length,
      zipf=zipf,
      successors=successors,
      follow=follow,
      test_fraction=test_fraction,
      valid_fraction=valid_fraction,
      max_len=max_len,
  )
  lens = seqs.lengths()
  return make_dataset(
      "synthetic",
      num_items,
      train,
      valid,
      test,
      {
          "recipe": {"synthetic": settings},
          "sources": [],
          "id_map": {},
          "id_order": "identity (synthetic ids)",
          "statistics": {"sessions": num_sessions, "avg_length": float(lens.mean())},
      },
  )


def _hit_rate(scores_of_last, examples: Examples, k: int, batch: int = 4096) -> float:
  """Share of examples whose target has fewer than k items (ids >= 1) scoring strictly higher."""
  last = examples.prefixes.items[examples.prefixes.offsets[1:] - 1]
  hits = 0
  for lo in range(0, len(examples), batch):
    scores = scores_of_last(last[lo : lo + batch])  # [b, V + 1]
    scores[:, 0] = -np.inf
    target = examples.targets[lo : lo + batch]
    target_score = scores[np.arange(len(target)), target]
    hits += int(((scores > target_score[:, None]).sum(axis=1) < k).sum())
  return hits / max(len(examples), 1)


def popularity_hit_rate(ds: SessionDataset, k: int = 10, split: str = "test") -> float:
  """HR@k of recommending the most frequent training items (ties broken by id)."""
  counts = ds.item_counts.astype(np.float64)
  # Break ties deterministically towards smaller ids, as a ranking would.
  scores = counts - np.arange(len(counts)) * 1e-9
  return _hit_rate(
      lambda last: np.broadcast_to(scores, (len(last), len(scores))).copy(), getattr(ds, split), k
  )


def markov_hit_rate(ds: SessionDataset, k: int = 10, split: str = "test") -> float:
  """HR@k of first-order transition counts from the last click (popularity breaks ties)."""
  v = ds.num_items + 1
  if v > 20_000:
    raise DataError(f"markov_hit_rate builds a dense [{v}, {v}] table; use <= 20,000 items")
  seqs = ds.train
  same = np.ones(len(seqs.items), dtype=bool)
  same[seqs.offsets[1:] - 1] = False  # no pair across a session boundary
  pairs = np.flatnonzero(same[:-1]) if len(seqs.items) else np.zeros(0, np.int64)
  table = np.zeros((v, v), dtype=np.float64)
  np.add.at(table, (seqs.items[pairs], seqs.items[pairs + 1]), 1.0)
  tie_break = ds.item_counts / (ds.item_counts.max() + 1.0) - np.arange(v) * 1e-9
  return _hit_rate(lambda last: table[last] + tie_break, getattr(ds, split), k)
