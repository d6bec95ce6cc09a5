"""The two evaluation protocols: per-user leave-one-out and the session time split.

`loo` (sequential, RecBole-compatible with split={'LS': 'valid_and_test'},
order='TO'): each user's clicks stable-sorted by time (ties keep file order);
a history h of length n gives the train sequence h[:n-2] (n - 3 targets),
valid (h[:n-2] -> h[n-2]) and test (h[:n-1] -> h[n-1]); valid/test prefixes
keep their last `max_len` items. Users are ordered by raw user id, so train[i],
valid[i] and test[i] are the same user. Item ids: order of first appearance
when all clicks are sorted by time (ties: by user id, then file order).

`session` (SR-GNN / GCE-GNN lineage): sessions sorted by click order, filtered
(items < min_item_count, sessions < min_session_length, until stable), split
by the time of each session's last click: test = sessions ending after
max_time - test_days; optionally only the most recent `train_fraction` of the
training sessions; test clicks on items absent from training removed and test
sessions left shorter than 2 dropped; test sessions prefix-augmented; a seeded
`valid_fraction` of training sessions moved to valid (prefix-augmented). Item
ids: first appearance in the training sessions ordered by time (SR-GNN's rule),
assigned before the validation sessions are taken out, so valid items always
have ids (their training count may be 0).
"""

from __future__ import annotations

import numpy as np

from ccrec.data import recipes
from ccrec.data.dataset import (
    Examples,
    Sequences,
    SessionDataset,
    make_dataset,
    prefix_augment,
    truncate,
)
from ccrec.data.errors import DataError
from ccrec.data.recipes import ClickLog, Recipe


def _manifest(name: str, log: ClickLog, recipe: Recipe, mapping: np.ndarray, extra: dict) -> dict:
  return {
      "recipe": recipe.to_dict(),
      "sources": log.sources,
      "id_map": recipes.id_map(mapping, log.item_vocab),
      "id_order": extra.pop("id_order"),
      "statistics": extra,
  }


def loo(log: ClickLog, recipe: Recipe, name: str) -> SessionDataset:
  """Leave-one-out split of per-user histories (see module docstring)."""
  recipe = recipe.validated()
  if recipe.protocol != "loo":
    raise DataError(f"protocols.loo called with recipe protocol {recipe.protocol!r}")
  log = recipes.filter_log(recipes.sort_sessions(log), recipe)
  recipes.check_nonempty(len(log), "the set of users", recipe, log.sources)
  time_order = np.argsort(log.time, kind="stable")  # ties keep row order
  mapping = recipes.dense_ids(log.item[time_order], len(log.item_vocab))
  items = mapping[log.item]
  offsets = recipes.group(log.session)
  lens = np.diff(offsets)
  histories = Sequences(offsets, items)
  train_lens = lens - 2
  train = Sequences(np.concatenate([[0], np.cumsum(train_lens)]), items[_head(offsets, train_lens)])
  valid = Examples(truncate(train, recipe.max_len), items[offsets[1:] - 2])
  test_prefix = Sequences(
      np.concatenate([[0], np.cumsum(lens - 1)]), histories.items[_head(offsets, lens - 1)]
  )
  test = Examples(truncate(test_prefix, recipe.max_len), items[offsets[1:] - 1])
  stats = {
      "users": len(lens),
      "clicks": int(len(log)),
      "avg_length": float(lens.mean()),
      "id_order": "first appearance in time order (ties: user id, then file order)",
  }
  return make_dataset(
      name, int(mapping.max()), train, valid, test, _manifest(name, log, recipe, mapping, stats)
  )


def _head(offsets: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """bool [N]: the first keep[s] rows of each session s."""
  sid = recipes.session_ids(offsets)
  return np.arange(offsets[-1]) - offsets[sid] < keep[sid]


def session(log: ClickLog, recipe: Recipe, name: str) -> SessionDataset:
  """Time split with prefix augmentation (see module docstring)."""
  recipe = recipe.validated()
  if recipe.protocol != "session":
    raise DataError(f"protocols.session called with recipe protocol {recipe.protocol!r}")
  log = recipes.sort_sessions(log)
  if recipe.max_sessions:
    log = recipes.first_sessions(log, recipe.max_sessions)
  log = recipes.filter_log(log, recipe)
  recipes.check_nonempty(len(log), "the click log", recipe, log.sources)
  offsets = recipes.group(log.session)
  end_time = np.maximum.reduceat(log.time, offsets[:-1])
  split = end_time.max() - recipe.test_days * recipes.DAY
  is_test = end_time > split
  is_train = end_time < split if recipe.drop_boundary_sessions else end_time <= split
  train_sessions = np.flatnonzero(is_train)
  train_sessions = train_sessions[np.argsort(end_time[train_sessions], kind="stable")]
  if recipe.train_fraction < 1.0:
    keep = int(len(train_sessions) * recipe.train_fraction)
    train_sessions = train_sessions[len(train_sessions) - keep :]
  test_sessions = np.flatnonzero(is_test)
  test_sessions = test_sessions[np.argsort(end_time[test_sessions], kind="stable")]
  all_sessions = Sequences(offsets, log.item)
  train_codes = all_sessions.take(train_sessions)
  recipes.check_nonempty(len(train_codes), "the training set", recipe, log.sources)
  mapping = recipes.dense_ids(train_codes.items, len(log.item_vocab))
  train = Sequences(train_codes.offsets, mapping[train_codes.items])
  test_codes = all_sessions.take(test_sessions)
  test_items = mapping[test_codes.items]
  if recipe.drop_unseen_test_items:
    seen = test_items > 0
    test_lens = np.bincount(
        recipes.session_ids(test_codes.offsets)[seen], minlength=len(test_codes)
    ).astype(np.int64)
    test_seqs = Sequences(np.concatenate([[0], np.cumsum(test_lens)]), test_items[seen])
  else:
    unseen = np.unique(test_codes.items[test_items == 0])
    mapping[unseen] = mapping.max() + 1 + np.arange(len(unseen))
    test_seqs = Sequences(test_codes.offsets, mapping[test_codes.items])
  test_seqs = test_seqs.take(np.flatnonzero(test_seqs.lengths() >= 2))
  recipes.check_nonempty(len(test_seqs), "the test set", recipe, log.sources)
  rng = np.random.default_rng(recipe.seed)
  num_valid = int(round(len(train) * recipe.valid_fraction))
  is_valid = np.zeros(len(train), dtype=bool)
  is_valid[rng.choice(len(train), size=num_valid, replace=False)] = True
  valid = prefix_augment(train.take(np.flatnonzero(is_valid)), recipe.max_len)
  test = prefix_augment(test_seqs, recipe.max_len)
  kept = np.concatenate([train.lengths(), test_seqs.lengths()])
  stats = {
      "sessions": len(kept),
      "train_sessions": int((~is_valid).sum()),
      "valid_sessions": num_valid,
      "test_sessions": len(test_seqs),
      "clicks": int(kept.sum()),
      "avg_length": float(kept.mean()),
      "split_time": float(split),
      "id_order": "first appearance in the training sessions ordered by time",
  }
  return make_dataset(
      name,
      int(mapping.max()),
      train.take(np.flatnonzero(~is_valid)),
      valid,
      test,
      _manifest(name, log, recipe, mapping, stats),
  )
