"""The on-device runtime: load a bundle with numpy alone, encode sessions, recommend.

    from ccrec.serving.runtime import Recommender
    rec = Recommender.load("bundle_dir")            # validates the manifest and checksums
    rec.recommend(["50", "172", "133"], k=20)       # -> Recommendation(items, ids, scores, ...)

Imports numpy and ccrec.serving's numpy modules only (no jax, flax or optax).

Item ids. `id_space='raw'` (default): session items are the dataset's raw ids
(looked up as strings, so 50 and "50" are the same item) when the bundle has
an id map, and the returned `items` are raw ids (str); bundles without a map
(synthetic data) use dense ids 1..V for both. `id_space='dense'`: session
items and results are dense ids 1..V, as in ccrec's datasets and models.

Bad input, never an IndexError:
- a session that is not a sequence of ids (None, a string, a dict, a set, a
  number, an array of other than one dimension) raises InvalidSessionError;
- unknown ids (not in the id map, outside 1..V, padding 0, not integers):
  on_unknown='skip' (default) drops them and lists them in
  `Recommendation.skipped`; on_unknown='error' raises UnknownItemError.
- an empty session (or one whose items were all skipped): on_empty='popular'
  (default) returns the most popular training items (bundle array
  meta/popular_items; scores are NaN and `fallback` is True);
  on_empty='error' raises EmptySessionError.
Sessions longer than max_len are encoded from their last max_len (known)
items; exclude_seen excludes every item of the session.
Scores that are not finite (a bundle with broken weights) raise BundleError,
never an empty or NaN-ranked list.

`pruned=True` (codes bundles): each session's top k comes from the exact pruned
search of `ccrec.serving.pruned`, which skips the code groups that cannot enter the
top k; the result is the full scan's, ties included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

import numpy as np

from ccrec.serving import nn
from ccrec.serving.bundle import BundleError, read_bundle
from ccrec.serving.manifest import DEFAULT_ENCODER, ENCODERS
from ccrec.serving.scoring import (
    CodeScorer,
    TableScorer,
    TTScorer,
    code_tables,
    top_k,
    top_k_columns,
)


class UnknownItemError(ValueError):
  """A session holds item ids the bundle does not know (on_unknown='error')."""


class EmptySessionError(ValueError):
  """A session has no known items (on_empty='error')."""


class InvalidSessionError(TypeError):
  """A session (or a batch of sessions) is not a sequence of item ids."""


def _check_sequence(value: Any, what: str, of: str = "item ids", ndims: tuple = (1,)) -> None:
  """Raises InvalidSessionError unless `value` is ordered (a list, tuple, iterator or an array
  of one of `ndims` dimensions), not None, a string, a mapping, a set or a scalar."""
  if isinstance(value, np.ndarray):
    if value.ndim not in ndims:
      raise InvalidSessionError(f"{what} must be a sequence of {of}, not a {value.ndim}-D array")
    return
  if isinstance(value, (str, bytes, bytearray)):
    kind = f"a single string ({value!r:.40})"
  elif isinstance(value, (Mapping, Set)):
    kind = f"a {'mapping' if isinstance(value, Mapping) else 'set'} ({type(value).__name__})"
  elif not isinstance(value, Iterable):
    kind = "None" if value is None else f"a single value ({type(value).__name__} {value!r:.40})"
  else:
    return
  raise InvalidSessionError(f"{what} must be a sequence of {of} (oldest first), not {kind}")


@dataclasses.dataclass(frozen=True)
class Recommendation:
  """The top-k items of one session.

  items: raw ids (str) when the bundle has an id map and id_space='raw', else
    dense ids (int).
  ids: int64 [k] dense ids.
  scores: float32 [k] model scores (NaN for a popularity fallback).
  skipped: the session's input ids that were skipped as unknown.
  fallback: True when the session was empty and popularity was returned.
  """

  items: list
  ids: np.ndarray
  scores: np.ndarray
  skipped: tuple = ()
  fallback: bool = False


def dequantize_codebooks(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """int8 [M, K, d] and per-codeword scale [M, K] -> float32 [M, K, d]."""
  return q.astype(np.float32) * scale[..., None].astype(np.float32)


def make_scorer(
    config: dict, arrays: dict[str, np.ndarray], tt_cache: bool = False, pruned: bool = False
):
  """The item scorer of a bundle's kind (CodeScorer, TableScorer or TTScorer); `pruned`
  builds the codes scorer's pruned-search index (codes bundles only)."""
  kind = config["embedding"]
  if kind == "codes":
    books = arrays["items/codebooks"]
    if config["codebook_dtype"] == "int8":
      books = dequantize_codebooks(books, arrays["items/codebook_scale"])
    return CodeScorer(arrays["items/codes"], books, pruned=pruned)
  if kind == "table":
    return TableScorer(arrays["items/embedding"])
  cores = [arrays[f"items/core_{i}"] for i in range(len(config["tt"]["item_factors"]))]
  return TTScorer(cores, config["tt"]["item_factors"], config["num_items"] + 1, cache=tt_cache)


def _check_finite(item_scores: np.ndarray) -> None:
  """Raises BundleError if item scores (padding column excluded) hold NaN or Inf."""
  # min/max propagate NaN and show +-Inf without a [B, V] temporary.
  if item_scores.size and not (np.isfinite(item_scores.max()) and np.isfinite(item_scores.min())):
    raise BundleError(
        "the bundle's model gives scores that are not finite (NaN or Inf): its "
        "weights are broken or overflow (read_bundle with verify=True names a "
        "non-finite array)"
    )


def _check_finite_tables(tables: np.ndarray) -> None:
  """The pruned search's check, on code tables [M, K] instead of item scores: every
  score is a sum of one entry per codebook, so finite tables whose largest entries sum
  below the float32 maximum give finite scores for every item."""
  bound = np.abs(tables.astype(np.float64)).max(axis=1).sum()
  if not np.isfinite(bound) or bound >= np.finfo(np.float32).max:
    _check_finite(np.array([np.inf], np.float32))


def _list_holds_bool(session: Any) -> bool:
  """numpy turns [True, 2] into [1, 2]; such a list takes the per-item path, where a bool is
  never an item id. Checked only where the integer fast path would be taken."""
  return not isinstance(session, np.ndarray) and any(
      isinstance(x, (bool, np.bool_)) for x in session
  )


class Recommender:
  """A loaded bundle: `recommend(session, k)` and `recommend_batch(sessions, k)`.

  Args:
    manifest, arrays: as returned by `bundle.read_bundle` (use `Recommender.load`).
    id_space: 'raw' or 'dense' (module docstring).
    on_unknown: 'skip' (default) or 'error'.
    on_empty: 'popular' (default) or 'error'.
    tt_cache: TT bundles only: build the full table once (fast, holds V*d floats)
      instead of rebuilding rows on every call.
    pruned: codes bundles only: exact pruned top-k (module docstring); builds an index
      of the codes at load.
  """

  def __init__(
      self,
      manifest: dict,
      arrays: dict[str, np.ndarray],
      *,
      id_space: str = "raw",
      on_unknown: str = "skip",
      on_empty: str = "popular",
      tt_cache: bool = False,
      pruned: bool = False,
  ):
    if id_space not in ("raw", "dense"):
      raise ValueError(f"id_space must be 'raw' or 'dense', got {id_space!r}")
    if on_unknown not in ("skip", "error"):
      raise ValueError(f"on_unknown must be 'skip' or 'error', got {on_unknown!r}")
    if on_empty not in ("popular", "error"):
      raise ValueError(f"on_empty must be 'popular' or 'error', got {on_empty!r}")
    self.manifest = manifest
    self.config = dict(manifest["config"])
    self.kind = self.config["embedding"]
    self.encoder = self.config.get("encoder", DEFAULT_ENCODER)  # nn.encode computes it
    if self.encoder not in ENCODERS:
      raise BundleError(
          f"the bundle's encoder {self.encoder!r} is not one this runtime serves ({ENCODERS})"
      )
    self.num_items = int(self.config["num_items"])
    self.max_len = int(self.config["max_len"])
    self.on_unknown, self.on_empty = on_unknown, on_empty
    if pruned and self.kind != "codes":
      raise ValueError(f"pruned=True needs a codes bundle; this bundle's items are {self.kind!r}")
    self.params = {
        n: np.asarray(a, np.float32)
        for n, a in arrays.items()
        if n.startswith(("encoder/", "readout/"))
    }
    try:
      self.scorer = make_scorer(self.config, arrays, tt_cache, pruned)
    except KeyError as e:
      raise BundleError(f"the bundle lacks array {e} of its kind {self.kind!r}") from e
    except ValueError as e:
      raise BundleError(f"bundle arrays are inconsistent: {e}") from e
    self.popular = np.asarray(arrays.get("meta/popular_items", np.zeros(0, np.int32)), np.int64)
    if self.popular.size and (self.popular.min() < 1 or self.popular.max() > self.num_items):
      raise BundleError(f"meta/popular_items holds ids outside 1..{self.num_items}")
    raw = arrays.get("meta/raw_item_ids")
    self.raw_ids: np.ndarray | None = None
    self._raw_to_dense: dict[str, int] | None = None
    if raw is not None and id_space == "raw":
      if raw.shape != (self.num_items + 1,):
        raise BundleError(
            f"meta/raw_item_ids has shape {raw.shape}, expected " f"({self.num_items + 1},)"
        )
      self.raw_ids = raw
      self._raw_to_dense = {str(r): i for i, r in enumerate(raw.tolist()) if i > 0}

  @classmethod
  def load(
      cls, directory: str, *, verify: bool = True, mmap: bool = False, **options: Any
  ) -> Recommender:
    """Validates and loads a bundle directory (see bundle.read_bundle); options as __init__."""
    manifest, arrays = read_bundle(directory, verify=verify, mmap=mmap)
    return cls(manifest, arrays, **options)

  # -------------------------------------------------------------------------- ids

  def _dense_id(self, item: Any) -> int | None:
    if self._raw_to_dense is not None:
      return self._raw_to_dense.get(item if isinstance(item, str) else str(item))
    if isinstance(item, (bool, np.bool_)):
      return None
    if isinstance(item, (int, np.integer)) and 1 <= item <= self.num_items:
      return int(item)
    if isinstance(item, str) and item.strip().isdigit():  # '17' means 17 without a map
      value = int(item)
      return value if 1 <= value <= self.num_items else None
    return None

  def to_dense(self, session: Iterable[Any]) -> tuple[np.ndarray, tuple]:
    """Session items -> (dense ids int64 [n] of all known items, skipped inputs)."""
    _check_sequence(session, "a session")
    try:
      arr = session if isinstance(session, np.ndarray) else np.asarray(session)
    except ValueError:  # ragged nested input: every element is checked below
      arr = np.zeros((0, 0))
    if (
        self._raw_to_dense is None
        and arr.ndim == 1
        and arr.dtype.kind in "iu"
        and not _list_holds_bool(session)
    ):
      ok = (arr >= 1) & (arr <= self.num_items)
      dense, skipped = arr[ok].astype(np.int64), tuple(arr[~ok].tolist())
    else:
      items = list(session)
      found = [self._dense_id(x) for x in items]
      dense = np.array([f for f in found if f is not None], np.int64)
      skipped = tuple(x for x, f in zip(items, found, strict=True) if f is None)
    if skipped and self.on_unknown == "error":
      raise UnknownItemError(
          f"unknown item ids {list(skipped)[:10]}"
          f"{' ...' if len(skipped) > 10 else ''} (the bundle knows "
          f"{self.num_items} items; on_unknown='skip' drops them)"
      )
    return dense, skipped

  def _items(self, ids: np.ndarray) -> list:
    if self.raw_ids is not None:
      return [str(x) for x in self.raw_ids[ids].tolist()]
    return [int(x) for x in ids.tolist()]

  # -------------------------------------------------------------------------- model

  def encode_dense(self, sessions: Sequence[np.ndarray]) -> np.ndarray:
    """Dense, non-empty sessions (ids in 1..V; the last max_len of each) -> s [B, d] float32."""
    sessions = [s[-self.max_len :] for s in sessions]
    length = max(len(s) for s in sessions)
    items = np.zeros((len(sessions), length), np.int64)
    for i, s in enumerate(sessions):
      items[i, : len(s)] = s
    mask = items > 0
    x = self.scorer.lookup(items)
    h = nn.encode(self.params, self.config, x, mask)
    return nn.readout(self.params, self.config, h, mask)

  def scores(self, s: np.ndarray) -> np.ndarray:
    """s [B, d] -> float32 [B, V+1] scores of every id (column 0, padding, = -inf).

    Raises BundleError if an item's score is NaN or Inf.

    For B > 1 this is a transposed view of the item-major [V+1, B] array the
    scorers compute (see scoring.CodeScorer.score_columns).
    """
    out = self.scorer.score(s[0])[None] if len(s) == 1 else self.scorer.score_columns(s).T
    _check_finite(out[:, 1:])
    return out

  # -------------------------------------------------------------------------- recommend

  def _pruned_top_k(
      self, s: np.ndarray, sessions: Sequence[np.ndarray], k: int, exclude_seen: bool
  ) -> tuple[np.ndarray, np.ndarray]:
    """Per session, the pruned search's top k ([B, k] ids and scores, -inf past the items
    left when exclude_seen leaves fewer than k)."""
    ids = np.zeros((len(s), k), np.int64)
    vals = np.full((len(s), k), -np.inf, np.float32)
    for row, tables in enumerate(code_tables(s, self.scorer.codebooks)):
      _check_finite_tables(tables)
      found, scores = self.scorer.index.top_k(tables, k, sessions[row] if exclude_seen else None)
      ids[row, : len(found)], vals[row, : len(found)] = found, scores
    return ids, vals

  def _fallback(self, k: int, skipped: tuple) -> Recommendation:
    if self.on_empty == "error":
      raise EmptySessionError(
          "the session has no known items (on_empty='popular' returns "
          "the most popular items instead)"
      )
    if not self.popular.size:
      raise EmptySessionError(
          "the session has no known items and the bundle stores no "
          "popularity list (meta/popular_items)"
      )
    ids = self.popular[:k]
    return Recommendation(
        self._items(ids), ids, np.full(len(ids), np.nan, np.float32), skipped, True
    )

  def _check_k(self, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"k must be a positive integer, got {k!r}")
    return min(int(k), self.num_items)

  def recommend(
      self, session: Iterable[Any], k: int = 20, *, exclude_seen: bool = False
  ) -> Recommendation:
    """Top-k items for one session (a sequence of item ids, oldest first)."""
    return self.recommend_batch([session], k, exclude_seen=exclude_seen)[0]

  def recommend_batch(
      self, sessions: Sequence[Iterable[Any]], k: int = 20, *, exclude_seen: bool = False
  ) -> list[Recommendation]:
    """Top-k items for each session; sessions are encoded and scored together.

    exclude_seen: never recommend an item already in the session.
    """
    _check_sequence(sessions, "the batch", "sessions", ndims=(1, 2))
    k = self._check_k(k)
    parsed = [self.to_dense(s) for s in sessions]
    live = [i for i, (dense, _) in enumerate(parsed) if len(dense)]
    out: list[Recommendation | None] = [None] * len(parsed)
    if live:
      sessions_live = [parsed[i][0] for i in live]
      s = self.encode_dense(sessions_live)
      if getattr(self.scorer, "index", None) is not None:
        ids, vals = self._pruned_top_k(s, sessions_live, k, exclude_seen)
      elif len(live) == 1:
        scores = self.scorer.score(s[0])
        _check_finite(scores[1:])
        if exclude_seen:
          scores[parsed[live[0]][0]] = -np.inf
        ids, vals = top_k(scores, k)
        ids, vals = ids[None], vals[None]
      else:
        columns = self.scorer.score_columns(s)  # [V+1, B]
        _check_finite(columns[1:])
        if exclude_seen:
          for row, i in enumerate(live):
            columns[parsed[i][0], row] = -np.inf
        ids, vals = top_k_columns(columns, k)
      for row, i in enumerate(live):
        keep = vals[row] > -np.inf  # fewer than k candidates left after exclude_seen
        out[i] = Recommendation(
            self._items(ids[row][keep]), ids[row][keep], vals[row][keep], parsed[i][1], False
        )
    for i, (_, skipped) in enumerate(parsed):
      if out[i] is None:
        out[i] = self._fallback(k, skipped)
    return out  # type: ignore[return-value]
