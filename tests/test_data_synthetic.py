"""Tests for ccrec/data/synthetic.py: planted signal, scale, determinism."""

import numpy as np
import pytest

from ccrec.data import synthetic
from ccrec.data.errors import DataError


def test_markov_beats_popularity():
  ds = synthetic.synthetic_dataset(500, 4000, seed=0)
  pop = synthetic.popularity_hit_rate(ds, 10)
  markov = synthetic.markov_hit_rate(ds, 10)
  assert markov > pop + 0.2, (markov, pop)
  assert 0.0 < pop < 0.5


def test_no_signal_no_gain():
  ds = synthetic.synthetic_dataset(300, 3000, seed=1, follow=0.0)
  assert synthetic.markov_hit_rate(ds, 10) < synthetic.popularity_hit_rate(ds, 10) + 0.03


def test_dataset_layout_and_determinism():
  a = synthetic.synthetic_dataset(100, 200, seed=3)
  b = synthetic.synthetic_dataset(100, 200, seed=3)
  c = synthetic.synthetic_dataset(100, 200, seed=4)
  np.testing.assert_array_equal(a.train.items, b.train.items)
  assert not np.array_equal(a.train.items, c.train.items)
  assert a.num_items == 100 and a.item_counts.shape == (101,) and a.item_counts[0] == 0
  assert (a.train.lengths() >= 2).all()
  assert len(a.test) > 0 and len(a.valid) > 0
  assert a.train.items.min() >= 1 and a.train.items.max() <= 100


def test_millions_of_items():
  seqs = synthetic.synthetic_sessions(2_000_000, 200_000, seed=0)
  assert seqs.items.max() <= 2_000_000 and seqs.items.min() >= 1
  counts = np.bincount(seqs.items)
  assert counts.max() > 50 * np.median(counts[counts > 0])  # heavy-tailed popularity


def test_bad_settings():
  with pytest.raises(DataError, match="num_items"):
    synthetic.synthetic_sessions(1, 10)
  with pytest.raises(DataError, match="follow"):
    synthetic.synthetic_sessions(10, 10, follow=2.0)
