"""Preprocessing recipes: the settings, the click-log type, and vectorised steps.

A `ClickLog` is what every reader returns: one row per click, in file order.
The steps here (sort into sessions, filter until stable, cap lengths, split by
time, drop unseen test items, remap ids) are numpy array operations with no
per-row Python loop, so a 33M-click log runs through them in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from typing import Any

import numpy as np

from ccrec.data.errors import DataError

DAY = 86400.0

# Recipe field annotation -> (accepted types, description); bools are never numbers here.
_KINDS = {
    "int": (numbers.Integral, "an integer"),
    "float": (numbers.Real, "a number"),
    "bool": ((bool, np.bool_), "True or False"),
    "str": (str, "a string"),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Every preprocessing setting; each one is recorded in the manifest."""

  protocol: str = "session"  # 'loo' (per-user leave-one-out) or 'session' (time split)
  max_len: int | None = 50  # loo: valid/test prefixes keep their last max_len items; None = all
  min_item_count: int = 5  # drop items with fewer occurrences (0 or 1: keep all)
  min_session_length: int = 2  # drop shorter sessions (loo: users; at least 3)
  filter_until_stable: bool = True  # repeat item/session filtering until nothing changes
  max_session_length: int = 0  # 0 = no cap; else see long_sessions
  long_sessions: str = "truncate"  # 'truncate' (keep the last clicks) or 'drop'
  max_sessions: int = 0  # 0 = all; else keep the earliest-starting sessions
  test_days: float = 7.0  # session: test = sessions ending in the last test_days days
  drop_boundary_sessions: bool = False  # SR-GNN drops sessions ending exactly at the split
  train_fraction: float = 1.0  # session: keep the most recent fraction of training sessions
  drop_unseen_test_items: bool = True  # remove test clicks on items absent from training
  valid_fraction: float = 0.1  # session: seeded share of training sessions held out
  seed: int = 0  # validation sampling

  def replace(self, **overrides: Any) -> "Recipe":
    names = {f.name for f in dataclasses.fields(self)}
    unknown = sorted(set(overrides) - names)
    if unknown:
      raise DataError(f"unknown recipe setting(s) {unknown}; known: {sorted(names)}")
    return dataclasses.replace(self, **overrides).validated()

  def validated(self) -> "Recipe":
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      kind = f.type.split(" | ")[0]
      optional = f.type.endswith(" | None")
      if optional and value is None:
        continue
      types, what = _KINDS[kind]
      if not isinstance(value, types) or (kind != "bool" and isinstance(value, (bool, np.bool_))):
        raise DataError(
            f"recipe setting {f.name} must be {what}{' or None' if optional else ''}, "
            f"got {value!r} ({type(value).__name__})"
        )
    if self.protocol not in ("loo", "session"):
      raise DataError(f"recipe setting protocol must be 'loo' or 'session', got {self.protocol!r}")
    if self.max_len is not None and self.max_len < 1:
      raise DataError(f"recipe setting max_len must be >= 1 (or None), got {self.max_len}")
    if self.long_sessions not in ("truncate", "drop"):
      raise DataError(
          f"recipe setting long_sessions must be 'truncate' or 'drop', "
          f"got {self.long_sessions!r}"
      )
    for name in ("min_item_count", "min_session_length", "max_session_length", "max_sessions"):
      if getattr(self, name) < 0:
        raise DataError(f"recipe setting {name} must be >= 0, got {getattr(self, name)}")
    if self.protocol == "loo" and self.min_session_length < 3:
      raise DataError(
          "recipe setting min_session_length must be >= 3 for protocol 'loo' "
          f"(a user needs a train prefix, a valid and a test item), "
          f"got {self.min_session_length}"
      )
    if 0 < self.max_session_length < max(self.min_session_length, 2):
      raise DataError(
          f"recipe setting max_session_length={self.max_session_length} is below "
          f"min_session_length={self.min_session_length}"
      )
    if not 0.0 < self.train_fraction <= 1.0:
      raise DataError(f"recipe setting train_fraction must be in (0, 1], got {self.train_fraction}")
    if not 0.0 <= self.valid_fraction < 1.0:
      raise DataError(f"recipe setting valid_fraction must be in [0, 1), got {self.valid_fraction}")
    if self.test_days <= 0:
      raise DataError(f"recipe setting test_days must be > 0, got {self.test_days}")
    return self

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def key(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)


@dataclasses.dataclass
class ClickLog:
  """One row per click, in file order (which breaks ties in time)."""

  session: np.ndarray  # int64 [N] session (or user) code
  item: np.ndarray  # int64 [N] code into item_vocab
  time: np.ndarray  # float64 [N] unix seconds: a session's time is its last click's
  item_vocab: np.ndarray  # [U] raw item ids (int64 or str)
  sources: list  # [{"path", "sha256", "format"}]
  order: np.ndarray | None = None  # [N] within-session order (Diginetica timeframe); None: time

  def __len__(self) -> int:
    return len(self.item)

  def take(self, rows: np.ndarray) -> "ClickLog":
    return dataclasses.replace(
        self,
        session=self.session[rows],
        item=self.item[rows],
        time=self.time[rows],
        order=None if self.order is None else self.order[rows],
    )


def group(session: np.ndarray) -> np.ndarray:
  """int64 [S + 1] offsets of the runs of equal values in a sorted `session` array."""
  if len(session) == 0:
    return np.zeros(1, dtype=np.int64)
  heads = np.flatnonzero(session[1:] != session[:-1]) + 1
  return np.concatenate([[0], heads, [len(session)]]).astype(np.int64)


def sort_sessions(log: ClickLog) -> ClickLog:
  """Stable sort by (session, order key): ties keep file order.

  Logs already in that order (Yoochoose, Diginetica by session) are returned
  as they are; otherwise two stable argsorts (key, then session).
  """
  key = log.time if log.order is None else log.order
  if len(log) < 2:
    return log
  step = np.diff(log.session)
  if ((step > 0) | ((step == 0) & (np.diff(key) >= 0))).all():
    return log
  rows = np.argsort(key, kind="stable")
  rows = rows[np.argsort(log.session[rows], kind="stable")]
  return log.take(rows)


def session_ids(offsets: np.ndarray) -> np.ndarray:
  """int64 [N]: the session index of each row, from group offsets."""
  return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def keep_last(offsets: np.ndarray, cap: int) -> np.ndarray:
  """bool [N]: rows among the last `cap` of their session."""
  sid = session_ids(offsets)
  position_from_end = offsets[sid + 1] - np.arange(offsets[-1]) - 1
  return position_from_end < cap


def first_sessions(log: ClickLog, k: int) -> ClickLog:
  """The rows of the k earliest-starting sessions (log sorted into sessions)."""
  offsets = group(log.session)
  if k <= 0 or len(offsets) - 1 <= k:
    return log
  start = np.minimum.reduceat(log.time, offsets[:-1])
  keep = np.zeros(len(offsets) - 1, dtype=bool)
  keep[np.argsort(start, kind="stable")[:k]] = True
  return log.take(np.repeat(keep, np.diff(offsets)))


def filter_log(log: ClickLog, recipe: Recipe) -> ClickLog:
  """Length cap, then item-count and session-length filtering (until stable if asked).

  `log` must be sorted into sessions; the result is too.
  """
  if recipe.max_session_length and recipe.long_sessions == "truncate":
    log = log.take(keep_last(group(log.session), recipe.max_session_length))
  num_codes = len(log.item_vocab)
  while True:
    before = len(log)
    offsets = group(log.session)
    lens = np.diff(offsets)
    ok = lens >= recipe.min_session_length
    if recipe.max_session_length and recipe.long_sessions == "drop":
      ok &= lens <= recipe.max_session_length
    log = log.take(np.repeat(ok, lens))
    if recipe.min_item_count > 1:
      counts = np.bincount(log.item, minlength=num_codes)
      log = log.take(counts[log.item] >= recipe.min_item_count)
    if len(log) == before:
      break
    if not recipe.filter_until_stable:
      # SR-GNN order: sessions, items, then sessions once more.
      lens = np.diff(group(log.session))
      return log.take(np.repeat(lens >= recipe.min_session_length, lens))
  return log


def dense_ids(item_codes_in_order: np.ndarray, num_codes: int) -> np.ndarray:
  """int64 [num_codes]: code -> dense id 1..V by first appearance, 0 for absent codes."""
  n = len(item_codes_in_order)
  first = np.full(num_codes, n, dtype=np.int64)
  np.minimum.at(first, item_codes_in_order, np.arange(n, dtype=np.int64))  # O(n), no sort
  present = np.flatnonzero(first < n)
  mapping = np.zeros(num_codes, dtype=np.int64)
  mapping[present[np.argsort(first[present], kind="stable")]] = np.arange(1, len(present) + 1)
  return mapping


def id_map(mapping: np.ndarray, vocab: np.ndarray) -> dict[str, int]:
  """{raw id string: dense id} for the codes that have a dense id."""
  codes = np.flatnonzero(mapping)
  return {str(raw): int(d) for raw, d in zip(vocab[codes].tolist(), mapping[codes].tolist())}


def check_nonempty(what: int, name: str, recipe: Recipe, sources: list) -> None:
  if what == 0:
    files = ", ".join(s["path"] for s in sources) or "the input"
    raise DataError(
        f"{files}: {name} is empty after preprocessing with recipe "
        f"{recipe.to_dict()}; loosen min_item_count / min_session_length / test_days"
    )
