"""Tests for ccrec/data/dataset.py: CSR sequences, prefix augmentation, save/load."""

import json

import numpy as np
import pytest

from ccrec.data import dataset as ds_lib
from ccrec.data.dataset import Examples, Sequences
from ccrec.data.errors import DataError

LISTS = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 1]]


def test_sequences_roundtrip_and_views():
  s = Sequences.from_lists(LISTS)
  assert len(s) == 4
  assert s.offsets.dtype == np.int64 and s.items.dtype == np.int32
  assert s.to_lists() == LISTS
  assert s[-1].tolist() == [7, 8, 9, 1]
  np.testing.assert_array_equal(s.lengths(), [3, 1, 2, 4])
  assert s.take([3, 0]).to_lists() == [[7, 8, 9, 1], [1, 2, 3]]
  assert s.take([]).to_lists() == []
  with pytest.raises(IndexError):
    s[4]


def test_sequences_rejects_bad_offsets():
  with pytest.raises(DataError, match="offsets"):
    Sequences(np.array([0, 2]), np.array([1, 2, 3]))
  with pytest.raises(DataError, match="targets"):
    Examples(Sequences.from_lists([[1]]), np.array([1, 2]))


def test_prefix_augment_matches_definition():
  ex = ds_lib.prefix_augment(Sequences.from_lists(LISTS))
  want = [(s[:p], s[p]) for s in LISTS for p in range(1, len(s))]
  assert ex.prefixes.to_lists() == [p for p, _ in want]
  assert ex.targets.tolist() == [t for _, t in want]
  short = ds_lib.prefix_augment(Sequences.from_lists(LISTS), max_len=2)
  assert short.prefixes.to_lists() == [p[-2:] for p, _ in want]


def test_truncate_keeps_last_items():
  s = ds_lib.truncate(Sequences.from_lists(LISTS), 2)
  assert s.to_lists() == [x[-2:] for x in LISTS]
  with pytest.raises(DataError, match="max_len"):
    ds_lib.prefix_augment(Sequences.from_lists(LISTS), max_len=0)


def _tiny():
  train = Sequences.from_lists([[1, 2, 3], [2, 3]])
  valid = Examples(Sequences.from_lists([[1]]), np.array([2]))
  test = Examples(Sequences.from_lists([[2, 3], [3]]), np.array([4, 1]))
  return ds_lib.make_dataset("tiny", 4, train, valid, test, {"recipe": {"a": 1}})


def test_make_dataset_counts_and_statistics():
  ds = _tiny()
  np.testing.assert_array_equal(ds.item_counts, [0, 1, 2, 2, 0])
  st = ds.manifest["statistics"]
  counts = (st["train_examples"], st["valid_examples"], st["test_examples"], st["items"])
  assert counts == (3, 1, 2, 4)
  ex = ds.train_examples()
  assert ex.targets.tolist() == [2, 3, 3]
  with pytest.raises(DataError, match="outside"):
    ds_lib.make_dataset("bad", 2, ds.train, ds.valid, ds.test)


def test_save_load_roundtrip(tmp_path):
  ds = _tiny()
  ds_lib.save(ds, tmp_path)
  assert json.loads((tmp_path / "manifest.json").read_text())["recipe"] == {"a": 1}
  back = ds_lib.load(tmp_path)
  assert back.train.to_lists() == ds.train.to_lists()
  assert back.test.prefixes.to_lists() == ds.test.prefixes.to_lists()
  np.testing.assert_array_equal(back.test.targets, ds.test.targets)
  np.testing.assert_array_equal(back.item_counts, ds.item_counts)
  assert back.manifest == ds.manifest


def test_load_errors_name_the_file(tmp_path):
  with pytest.raises(DataError, match="manifest.json"):
    ds_lib.load(tmp_path)
  (tmp_path / "manifest.json").write_text("{not json")
  with pytest.raises(DataError, match="line 1"):
    ds_lib.load(tmp_path)
