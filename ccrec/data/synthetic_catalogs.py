"""Named, seeded synthetic catalogs at the paper's scale and beyond, with grouped items.

`synthetic-40k` has the statistics of the paper's Tmall data (METHOD.md §1, counted as
the paper counts them, after prefix augmentation): 40,728 items, 351,268 training
examples, 25,898 test examples, mean session length 6.69 (sessions of 2..40 clicks).
`synthetic-1m` is a million-item catalog (999,999 items, so that the 10^6 rows of an
item array split evenly over a mesh's model axis) with the same shape. Each is built exactly:
the items, the train and test example counts are the requested ones, the mean length
is within rounding; a seeded `valid_fraction` share of the training-period sessions is
held out on top of the training examples (the paper had no validation split).

The planted signal has the structure real catalogs have. Every item belongs to one of
`num_groups` latent groups (a seeded hash of its id). A click is a fresh popularity
draw with probability 1 - `follow`; otherwise it follows the previous click: it picks
one of `group_successors` successor groups uniformly, then an item of that group by
popularity. With probability `structure` the successor groups are those of the
previous item's GROUP (slot 0 being the group itself: browsing within a category);
otherwise they are the previous ITEM's own, drawn independently per item (as
`ccrec.data.synthetic` draws each item's successors). Both ways the next-item
distribution has the same form, a mixture of `group_successors` groups' popularity;
the settings differ in what items share (and, through slot 0 keeping sessions inside
a group, somewhat in how hard they are: compare models on each with its own
baselines, `ccrec.data.sparse_baselines`). With structure 1
every item of a group has the same next-item distribution, so similar items behave
alike and a model that shares parameters between them (compositional codes) loses
little; with structure 0 (`*-unstructured`, the control) items share nothing beyond
popularity, and compressed item embeddings are expected to lose.

Popularity: a Zipf law over a random ranking of the items mixed with a uniform share
`popularity_floor`, which stands in for the >= 5-clicks item filter of the real
recipes. Every item occurs in the training-period sessions: an item no click reached
replaces one fresh (signal-free) click of a frequent item; the manifest counts them.
Everything is vectorised over sessions, one numpy step per position.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ccrec.data.dataset import Sequences, SessionDataset, make_dataset, prefix_augment
from ccrec.data.errors import DataError
from ccrec.data.recipes import Recipe
from ccrec.data.synthetic import _hash_uniform

MIN_LENGTH = 2


@dataclasses.dataclass(frozen=True)
class CatalogSpec:
  """Every setting of a synthetic catalog; each one is recorded in the manifest."""

  num_items: int  # V: ids 1..V, all of them clicked in the training-period sessions
  train_examples: int  # prefix-augmented training examples (excluding validation)
  test_examples: int  # prefix-augmented test examples
  mean_length: float  # mean session length over train, validation and test sessions
  max_length: int = 40  # sessions have 2..max_length clicks
  zipf: float = 0.7  # exponent of the popularity power law
  popularity_floor: float = 0.3  # share of the popularity spread uniformly over items
  follow: float = 0.7  # chance that a click follows the previous one (else a fresh draw)
  structure: float = 0.8  # share of followed clicks that use the group's successor groups
  num_groups: int = 4096  # latent item groups (about 10 items each at 40k)
  group_successors: int = 4  # successor groups of a group (slot 0: itself) or of an item
  data_seed: int = 0  # seeds the catalog, its groups, transitions and sessions

  def replace(self, **overrides: Any) -> "CatalogSpec":
    names = {f.name for f in dataclasses.fields(self)}
    unknown = sorted(set(overrides) - names)
    if unknown:
      raise DataError(f"unknown synthetic catalog setting(s) {unknown}; known: {sorted(names)}")
    return dataclasses.replace(self, **overrides).validated()

  def validated(self) -> "CatalogSpec":
    def need(ok, name, what):
      if not ok:
        raise DataError(f"synthetic catalog setting {name} {what}, got {getattr(self, name)!r}")

    for name in (
        "num_items",
        "train_examples",
        "test_examples",
        "max_length",
        "num_groups",
        "group_successors",
        "data_seed",
    ):
      need(
          isinstance(getattr(self, name), (int, np.integer))
          and not isinstance(getattr(self, name), bool),
          name,
          "must be an integer",
      )
    need(self.num_items >= 2, "num_items", "must be >= 2")
    need(self.train_examples >= 1, "train_examples", "must be >= 1")
    need(self.test_examples >= 1, "test_examples", "must be >= 1")
    need(self.max_length >= MIN_LENGTH, "max_length", f"must be >= {MIN_LENGTH}")
    need(
        MIN_LENGTH <= self.mean_length <= self.max_length,
        "mean_length",
        f"must be in [{MIN_LENGTH}, max_length]",
    )
    for name in ("popularity_floor", "follow", "structure"):
      need(0.0 <= getattr(self, name) <= 1.0, name, "must be in [0, 1]")
    need(self.zipf >= 0, "zipf", "must be >= 0")
    need(1 <= self.num_groups <= self.num_items, "num_groups", "must be in [1, num_items]")
    need(self.group_successors >= 1, "group_successors", "must be >= 1")
    return self

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


_TMALL = CatalogSpec(
    num_items=40_728, train_examples=351_268, test_examples=25_898, mean_length=6.69
)
PRESETS: dict[str, CatalogSpec] = {
    "synthetic-40k": _TMALL,
    "synthetic-40k-unstructured": _TMALL.replace(structure=0.0),
    # The Tmall shape at a million items (examples per item and test share as above);
    # 999,999 items: the V + 1 = 10^6 rows of item arrays split over 2..64 model-axis devices.
    "synthetic-1m": _TMALL.replace(
        num_items=999_999, train_examples=8_625_000, test_examples=636_000, num_groups=100_000
    ),
    "synthetic-1m-unstructured": _TMALL.replace(
        num_items=999_999,
        train_examples=8_625_000,
        test_examples=636_000,
        num_groups=100_000,
        structure=0.0,
    ),
}
# Recipe fields a synthetic catalog reads; the others describe raw-log filtering.
RECIPE_FIELDS = ("protocol", "max_len", "valid_fraction", "seed")
RECIPE = Recipe(protocol="session", min_item_count=0)  # what a manifest records
GENERATOR_VERSION = 1  # part of the cache key: a changed generator never reuses old copies


# ---------------------------------------------------------------------------- the catalog


def _search(cdf: np.ndarray, x: np.ndarray) -> np.ndarray:
  """searchsorted(cdf, x, 'right') with the queries sorted first (cache-friendly)."""
  order = np.argsort(x)
  out = np.empty(len(x), dtype=np.int64)
  out[order] = np.searchsorted(cdf, x[order], side="right")
  return out


def item_popularity(spec: CatalogSpec) -> np.ndarray:
  """float64 [V + 1]: click probability of each item (index 0: 0), a fixed function of spec."""
  rng = np.random.default_rng([spec.data_seed, 0])
  v = spec.num_items
  zipf = np.arange(1, v + 1, dtype=np.float64) ** -spec.zipf
  p = (1.0 - spec.popularity_floor) * zipf / zipf.sum() + spec.popularity_floor / v
  return np.concatenate([[0.0], p[rng.permutation(v)]])


def item_groups(spec: CatalogSpec) -> np.ndarray:
  """int64 [V + 1]: the latent group of each item (index 0: -1), a seeded hash of the id."""
  ids = np.arange(1, spec.num_items + 1)
  groups = (_hash_uniform(ids, spec.data_seed * 7 + 1) * spec.num_groups).astype(np.int64)
  return np.concatenate([[-1], groups])


class _Transitions:
  """The planted next-click distributions, evaluated for the clicks actually drawn."""

  def __init__(self, spec: CatalogSpec):
    self.spec = spec
    p = item_popularity(spec)
    self.cdf = np.cumsum(p)  # [V + 1], cdf[0] = 0: a search gives ids 1..V
    self.groups = item_groups(spec)
    # Items laid out group by group; each group's popularity is a contiguous cdf segment.
    self.members = np.argsort(self.groups[1:], kind="stable") + 1
    g = spec.num_groups
    self.start = np.concatenate([[0], np.cumsum(np.bincount(self.groups[1:], minlength=g))])
    self.member_cdf = np.concatenate([[0.0], np.cumsum(p[self.members])])
    # Successor groups are drawn by group popularity, so an empty group is never one.
    self.group_cdf = np.concatenate(
        [[0.0], np.cumsum(np.bincount(self.groups[1:], weights=p[1:], minlength=g))]
    )
    slots = np.arange(g)[:, None] * spec.group_successors + np.arange(spec.group_successors)
    self.group_succ = self._draw_groups(slots, spec.data_seed * 7 + 2)
    self.group_succ[:, 0] = np.arange(g)
    self.item_seed = spec.data_seed * 7 + 3

  def _draw_groups(self, keys: np.ndarray, seed: int) -> np.ndarray:
    """Groups drawn by popularity, a fixed function of (key, seed)."""
    u = _hash_uniform(keys.reshape(-1), seed) * self.group_cdf[-1]
    g = np.clip(_search(self.group_cdf, u) - 1, 0, self.spec.num_groups - 1)
    return g.reshape(keys.shape)

  def fresh(self, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(_search(self.cdf, rng.random(n) * self.cdf[-1]), 1, self.spec.num_items)

  def follow(self, prev: np.ndarray, shared: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Next items after `prev`: through the group's successor groups where `shared`, else
    through the item's own (a fixed function of the item id and the slot)."""
    slot = rng.integers(0, self.spec.group_successors, len(prev))
    own = self._draw_groups(prev * self.spec.group_successors + slot, self.item_seed)
    g = np.where(shared, self.group_succ[self.groups[prev], slot], own)
    lo, hi = self.member_cdf[self.start[g]], self.member_cdf[self.start[g + 1]]
    pos = _search(self.member_cdf, lo + rng.random(len(prev)) * (hi - lo)) - 1
    return self.members[np.clip(pos, self.start[g], self.start[g + 1] - 1)]


def _fit_total(lengths: np.ndarray, clicks: int, hi: int, rng: np.random.Generator) -> np.ndarray:
  """Lengths moved by one click at random sessions until they sum to `clicks`."""
  lengths = lengths.copy()
  while (diff := clicks - int(lengths.sum())) != 0:
    movable = np.flatnonzero(lengths < hi if diff > 0 else lengths > MIN_LENGTH)
    pick = rng.choice(movable, size=min(abs(diff), len(movable)), replace=False)
    lengths[pick] += 1 if diff > 0 else -1
  return lengths


def _lengths(num: int, examples: int, spec: CatalogSpec, rng: np.random.Generator) -> np.ndarray:
  """int64 [num] session lengths in 2..max_length with exactly `examples` targets.

  A shifted geometric law (heavy-tailed like real sessions) of the spec's mean, capped,
  then moved one click at a time to the exact total.
  """
  if not num <= examples <= num * (spec.max_length - 1):
    raise DataError(
        f"{examples} examples do not fit {num} sessions of {MIN_LENGTH}.."
        f"{spec.max_length} clicks"
    )
  draw = MIN_LENGTH - 1 + rng.geometric(1.0 / (spec.mean_length - 1.0), num)
  return _fit_total(np.minimum(draw, spec.max_length), examples + num, spec.max_length, rng)


def _generate(
    lengths: np.ndarray, tr: _Transitions, rng: np.random.Generator
) -> tuple[Sequences, np.ndarray]:
  """Sessions of the given lengths; also bool [clicks] marking fresh (signal-free) clicks."""
  spec = tr.spec
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  items = np.zeros(offsets[-1], dtype=np.int32)
  fresh = np.ones(offsets[-1], dtype=bool)
  order = np.argsort(-lengths, kind="stable")  # the sessions still running form a prefix
  prev = tr.fresh(len(lengths), rng)[order]
  items[offsets[order]] = prev
  for t in range(1, int(lengths.max())):
    active = int(np.count_nonzero(lengths[order] > t))
    prev = prev[:active]
    rows = offsets[order[:active]] + t
    follows = rng.random(active) < spec.follow
    shared = rng.random(active) < spec.structure
    nxt = tr.fresh(active, rng)
    f = np.flatnonzero(follows)
    nxt[f] = tr.follow(prev[f], shared[f], rng)
    items[rows] = nxt
    fresh[rows] = ~follows
    prev = nxt
  return Sequences(offsets, items), fresh


def _cover(items: np.ndarray, fresh: np.ndarray, num_items: int, rng: np.random.Generator) -> int:
  """Puts every item 1..V into `items` (in place) by replacing fresh clicks of frequent items.

  Only clicks of items with more occurrences than there are missing items are replaced, so
  no item loses its last occurrence. Returns the number of clicks replaced.
  """
  counts = np.bincount(items, minlength=num_items + 1)
  missing = np.flatnonzero(counts[1:] == 0) + 1
  if len(missing) == 0:
    return 0
  candidates = np.flatnonzero(fresh & (counts[items] > len(missing)))
  if len(candidates) < len(missing):
    raise DataError(
        f"synthetic catalog: {len(missing)} of {num_items} items were never clicked "
        "and too few fresh clicks can make room; raise popularity_floor or the "
        "number of examples"
    )
  items[rng.choice(candidates, size=len(missing), replace=False)] = missing
  return len(missing)


def build(name: str, spec: CatalogSpec, recipe: Recipe) -> SessionDataset:
  """The SessionDataset of a synthetic catalog in the `session` protocol layout.

  Training-period sessions come first (standing for time), test sessions last; the
  recipe's `valid_fraction` and `seed` choose the validation sessions among the
  training-period ones, `max_len` truncates validation and test prefixes.
  """
  spec, recipe = spec.validated(), recipe.validated()
  if recipe.protocol != "session":
    raise DataError(f"synthetic catalog {name!r} uses protocol 'session', got {recipe.protocol!r}")
  step = spec.mean_length - 1.0
  n_train = max(1, round(spec.train_examples / step))
  n_test = max(1, round(spec.test_examples / step))
  f = recipe.valid_fraction
  n_valid = round(n_train * f / (1.0 - f))
  rng = np.random.default_rng([spec.data_seed, 1])
  lengths = np.concatenate(
      [
          _lengths(n_train, spec.train_examples, spec, rng),
          _lengths(n_valid, max(n_valid, round(n_valid * step)), spec, rng) if n_valid else [],
          _lengths(n_test, spec.test_examples, spec, rng),
      ]
  ).astype(np.int64)
  # Validation sessions: a seeded choice among the training-period ones (as protocols.session).
  period = n_train + n_valid
  is_valid = np.zeros(period, dtype=bool)
  is_valid[np.random.default_rng(recipe.seed).choice(period, size=n_valid, replace=False)] = True
  placed = np.empty(period, dtype=np.int64)
  placed[~is_valid], placed[is_valid] = lengths[:n_train], lengths[n_train:period]
  lengths = np.concatenate([placed, lengths[period:]])
  seqs, fresh = _generate(lengths, _Transitions(spec), rng)
  boundary = int(seqs.offsets[period])
  covered = _cover(seqs.items[:boundary], fresh[:boundary], spec.num_items, rng)
  train = seqs.take(np.flatnonzero(~is_valid))
  valid = prefix_augment(seqs.take(np.flatnonzero(is_valid)), recipe.max_len)
  test = prefix_augment(seqs.take(np.arange(period, len(lengths))), recipe.max_len)
  stats = {
      "sessions": len(lengths),
      "train_sessions": n_train,
      "valid_sessions": n_valid,
      "test_sessions": n_test,
      "clicks": int(lengths.sum()),
      "avg_length": float(lengths.mean()),
      "clicks_replaced_for_coverage": covered,
  }
  return make_dataset(
      name,
      spec.num_items,
      train,
      valid,
      test,
      {
          "recipe": recipe.to_dict(),
          "sources": [],
          "id_map": {},
          "id_order": "identity (synthetic ids)",
          "synthetic": spec.to_dict(),
          "generator": GENERATOR_VERSION,
          "statistics": stats,
      },
  )


def spec_for(name: str, overrides: dict | None = None) -> CatalogSpec:
  """The preset `name` with `overrides` (CatalogSpec fields, e.g. structure=0.5)."""
  if name not in PRESETS:
    raise DataError(f"unknown synthetic catalog {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**dict(overrides or {}))


def within_group_share(sequences: Sequences, groups: np.ndarray) -> float:
  """Share of consecutive click pairs inside a session whose two items share a group."""
  same_session = np.ones(len(sequences.items), dtype=bool)
  same_session[sequences.offsets[1:] - 1] = False
  pairs = np.flatnonzero(same_session[:-1])
  g = groups[sequences.items]
  return float(np.mean(g[pairs] == g[pairs + 1])) if len(pairs) else 0.0
