"""Tests for ccrec/data/batching.py: static shapes, exactly-once coverage, determinism."""

import collections

import numpy as np
import pytest

from ccrec.data import batching
from ccrec.data.dataset import Examples, Sequences, prefix_augment
from ccrec.data.errors import DataError
from ccrec.data.synthetic import synthetic_sessions


def _examples(n=37, seed=0):
  rng = np.random.default_rng(seed)
  lists = [rng.integers(1, 50, rng.integers(1, 12)).tolist() for _ in range(n)]
  return Examples(Sequences.from_lists(lists), rng.integers(1, 50, n)), lists


@pytest.mark.parametrize("shuffle", [False, True])
def test_prefix_batches_cover_each_example_once(shuffle):
  ex, lists = _examples()
  batches = list(batching.prefix_batches(ex, 8, 5, shuffle=shuffle, seed=3))
  assert len(batches) == batching.num_batches(len(ex), 8) == 5
  seen = collections.Counter()
  for b in batches:
    assert b["items"].shape == (8, 5) and b["items"].dtype == np.int32
    assert b["target"].dtype == np.int32 and b["weight"].dtype == np.float32
    for row, t, w in zip(b["items"], b["target"], b["weight"]):
      if w > 0:
        seen[(tuple(row[row > 0]), int(t))] += 1
      else:
        assert t == 0 and not row.any()
  want = collections.Counter((tuple(p[-5:]), int(t)) for p, t in zip(lists, ex.targets))
  assert seen == want
  assert sum(float(b["weight"].sum()) for b in batches) == len(ex)


def test_prefix_batches_left_aligned_truncated():
  ex = Examples(Sequences.from_lists([[1, 2, 3, 4, 5, 6], [7]]), np.array([8, 9]))
  (b,) = batching.prefix_batches(ex, 4, 3)
  np.testing.assert_array_equal(b["items"], [[4, 5, 6], [7, 0, 0], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b["weight"], [1, 1, 0, 0])


def test_shuffle_is_deterministic_in_seed_and_epoch():
  ex, _ = _examples(100)
  run = lambda **kw: np.concatenate([b["target"] for b in batching.prefix_batches(ex, 16, 4, **kw)])
  same = run(shuffle=True, seed=1, epoch=2)
  np.testing.assert_array_equal(same, run(shuffle=True, seed=1, epoch=2))
  assert not np.array_equal(run(shuffle=True, seed=1, epoch=2), run(shuffle=True, seed=1, epoch=3))
  np.testing.assert_array_equal(run()[:100], ex.targets)
  assert not run()[100:].any()


def test_window_batches_hand_computed():
  seqs = Sequences.from_lists([[1, 2, 3, 4, 5, 6], [7, 8], [9]])
  starts, lens, first = batching.windows(seqs, 3)
  # [1..6]: inputs 1..5, targets 2..6 -> windows [2, 5) and [0, 2); [7, 8]: one; [9]: none.
  assert lens.tolist() == [3, 2, 1] and batching.num_windows(seqs, 3) == 3
  assert first.tolist() == [0, 0, 0]
  (b,) = batching.window_batches(seqs, 4, 3, shuffle=False)
  np.testing.assert_array_equal(b["items"], [[3, 4, 5], [1, 2, 0], [7, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b["targets"], [[4, 5, 6], [2, 3, 0], [8, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b["weights"], b["targets"] > 0)
  assert b["weights"].dtype == np.float32


def test_strided_windows_hand_computed():
  seqs = Sequences.from_lists([list(range(1, 13)), [20, 21, 22]])
  # m = 11 targets, L = 4, stride 2: windows end at 11, 9, 7, 5, 3 (the last starts at 0).
  (b,) = batching.window_batches(seqs, 8, 4, shuffle=False, stride=2)
  np.testing.assert_array_equal(
      b["items"][:6],
      [[8, 9, 10, 11], [6, 7, 8, 9], [4, 5, 6, 7], [2, 3, 4, 5], [1, 2, 3, 0], [20, 21, 0, 0]],
  )
  # Only the last `stride` targets of a window count, except in the earliest window.
  np.testing.assert_array_equal(
      b["targets"][:6],
      [[0, 0, 11, 12], [0, 0, 9, 10], [0, 0, 7, 8], [0, 0, 5, 6], [2, 3, 4, 0], [21, 22, 0, 0]],
  )
  assert batching.num_windows(seqs, 4, 2) == 6
  with pytest.raises(ValueError, match="stride"):
    batching.num_windows(seqs, 4, 5)


@pytest.mark.parametrize("stride", [None, 1, 3, 7])
def test_strided_windows_cover_every_target_once(stride):
  seqs = synthetic_sessions(200, 300, seed=1, mean_length=9, max_length=40)
  got = collections.Counter()
  for b in batching.window_batches(seqs, 32, 7, seed=5, epoch=1, stride=stride):
    m = b["weights"] > 0
    assert np.array_equal(m, b["targets"] > 0)
    got.update(b["targets"][m].tolist())
  want = collections.Counter()
  for s in seqs.to_lists():
    want.update(s[1:])
  assert got == want


def test_window_targets_cover_every_training_target_once():
  seqs = synthetic_sessions(200, 300, seed=1, mean_length=9, max_length=40)
  batches = list(batching.window_batches(seqs, 32, 7, seed=5, epoch=1))
  assert len(batches) == batching.num_batches(batching.num_windows(seqs, 7), 32)
  got = collections.Counter()
  for b in batches:
    m = b["weights"] > 0
    assert (b["items"][m] > 0).all()
    got.update(zip(b["items"][m].tolist(), b["targets"][m].tolist()))
  # Every (click, next click) pair of the training sequences exactly once.
  want = collections.Counter()
  for s in seqs.to_lists():
    want.update(zip(s[:-1], s[1:]))
  assert got == want
  assert sum(float(b["weights"].sum()) for b in batches) == len(prefix_augment(seqs))


def test_window_batches_on_ml100k_scale():
  seqs = synthetic_sessions(1682, 943, seed=0, mean_length=104, max_length=700)
  n = sum(1 for _ in batching.window_batches(seqs, 128, 50, seed=0))
  assert n == batching.steps_per_epoch(seqs, "window", 128, 50)


def test_bad_settings():
  ex, _ = _examples()
  with pytest.raises(DataError, match="max_len"):
    next(batching.prefix_batches(ex, 8, 0))
  with pytest.raises(DataError, match="batch_size"):
    next(batching.window_batches(ex.prefixes, 0, 4))


def test_hot_mask_top_fraction_ties_by_id():
  counts = np.array([0, 5, 9, 5, 1, 0, 9, 2, 2, 3, 5])
  mask = batching.hot_mask(counts, 0.2)  # 10 items -> 2 hot
  assert mask.dtype == bool and mask.shape == (11,)
  assert np.flatnonzero(mask).tolist() == [2, 6]
  assert np.flatnonzero(batching.hot_mask(counts, 0.3)).tolist() == [1, 2, 6]
  assert batching.popularity_ranking(counts)[:4].tolist() == [2, 6, 1, 3]
  assert not batching.hot_mask(counts, 1.0)[0]


@pytest.mark.parametrize("stride", [None, 3])
def test_steps_per_epoch_counts_the_batches_an_epoch_yields(stride):
  seqs = synthetic_sessions(150, 300, seed=2, mean_length=9, max_length=40)
  windows = list(batching.window_batches(seqs, 16, 7, seed=0, stride=stride))
  assert batching.steps_per_epoch(seqs, "window", 16, 7, stride) == len(windows)
  examples = prefix_augment(seqs, 7)
  prefixes = list(batching.prefix_batches(examples, 16, 7, shuffle=True, seed=0))
  assert batching.steps_per_epoch(seqs, "prefix", 16, 7) == len(prefixes)
  with pytest.raises(ValueError, match="objective"):
    batching.steps_per_epoch(seqs, "windows", 16, 7)


def _padded(batches, key, max_len):
  """Every batch's [B, L] column `key` padded back to max_len columns, stacked."""
  return np.concatenate([np.pad(b[key], ((0, 0), (0, max_len - b[key].shape[1]))) for b in batches])


def _rows(*arrays):
  return collections.Counter(zip(*(tuple(map(tuple, a)) for a in arrays)))


def test_length_buckets_keep_every_prefix_and_cut_only_padding():
  seqs = synthetic_sessions(60, 400, seed=2, mean_length=5, max_length=30)
  ex = prefix_augment(seqs)
  full = list(batching.prefix_batches(ex, 16, 24, shuffle=True, seed=1))
  cut = list(batching.prefix_batches(ex, 16, 24, shuffle=True, seed=1, length_bucket=8))
  assert len(cut) == len(full) == batching.num_batches(len(ex), 16)
  for b in cut:
    longest = int((b["items"] > 0).sum(axis=1).max())
    width = b["items"].shape[1]
    # The batch's longest prefix, rounded up to a multiple of 8 (at most max_len = 24).
    assert width == min(24, max(8, -(-longest // 8) * 8))
  # The same (prefix, target, weight) rows, only regrouped.
  items = lambda bs: _padded(bs, "items", 24)
  col = lambda bs, k: np.concatenate([b[k] for b in bs])[:, None]
  assert _rows(items(cut), col(cut, "target"), col(cut, "weight")) == _rows(
      items(full), col(full, "target"), col(full, "weight")
  )
  # Rows of similar length share a batch: far fewer cells than at max_len.
  assert sum(b["items"].size for b in cut) < 0.5 * sum(b["items"].size for b in full)


def test_length_buckets_keep_every_window_target_once():
  seqs = synthetic_sessions(80, 300, seed=4, mean_length=6, max_length=40)
  full = list(batching.window_batches(seqs, 32, 20, seed=3, epoch=2))
  cut = list(batching.window_batches(seqs, 32, 20, seed=3, epoch=2, length_bucket=4))
  assert len(cut) == len(full)
  assert {b["items"].shape[1] for b in cut} - {4, 8, 12, 16, 20} == set()
  assert len({b["items"].shape[1] for b in cut}) > 1
  for b in cut:
    assert b["items"].shape == b["targets"].shape == b["weights"].shape
  assert _rows(*(_padded(cut, k, 20) for k in ("items", "targets", "weights"))) == _rows(
      *(_padded(full, k, 20) for k in ("items", "targets", "weights"))
  )
  # Deterministic in (seed, epoch); another epoch another order.
  again = list(batching.window_batches(seqs, 32, 20, seed=3, epoch=2, length_bucket=4))
  assert all(np.array_equal(a["items"], b["items"]) for a, b in zip(cut, again))
  other = list(batching.window_batches(seqs, 32, 20, seed=3, epoch=3, length_bucket=4))
  assert not all(
      a["items"].shape == b["items"].shape and np.array_equal(a["items"], b["items"])
      for a, b in zip(cut, other)
  )


def test_length_bucket_must_not_be_negative():
  ex, _ = _examples()
  with pytest.raises(DataError, match="length_bucket"):
    next(batching.prefix_batches(ex, 8, 4, length_bucket=-1))
  with pytest.raises(DataError, match="length_bucket"):
    next(batching.window_batches(ex.prefixes, 8, 4, length_bucket=-1))
