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


def _corrupt(data: bytes, how: str) -> bytes:
  if how == "truncated":
    return data[: len(data) // 2]
  if how == "flipped":
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)
  return {"empty": b"", "garbage": b"garbage"}[how]


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "garbage"])
def test_corrupt_arrays_file_is_one_clear_error(tmp_path, how):
  ds_lib.save(_tiny(), tmp_path)
  path = tmp_path / "data.npz"
  path.write_bytes(_corrupt(path.read_bytes(), how))
  with pytest.raises(DataError, match=r"data.npz: corrupt or not a prepared dataset.*rebuild") as e:
    ds_lib.load(tmp_path)
  assert "allow_pickle" not in str(e.value)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda m: {**m, "num_items": "seven"},
            r"manifest.json, field 'num_items': expected an " r"integer >= 0, got 'seven'",
        ),
        (lambda m: {**m, "name": 3}, r"manifest.json, field 'name': expected a string, got 3"),
        (
            lambda m: {k: v for k, v in m.items() if k != "name"},
            r"manifest.json, field 'name': missing",
        ),
        (lambda m: [1, 2], r"manifest.json: expected a JSON object, got list"),
    ],
)
def test_bad_manifest_names_file_and_field(tmp_path, edit, message):
  ds_lib.save(_tiny(), tmp_path)
  path = tmp_path / "manifest.json"
  path.write_text(json.dumps(edit(json.loads(path.read_text()))))
  with pytest.raises(DataError, match=message):
    ds_lib.load(tmp_path)


def test_truncated_manifest_names_file(tmp_path):
  ds_lib.save(_tiny(), tmp_path)
  path = tmp_path / "manifest.json"
  text = path.read_bytes()
  path.write_bytes(text[: len(text) // 2])
  with pytest.raises(DataError, match=r"manifest.json, line \d+: invalid JSON.*truncated"):
    ds_lib.load(tmp_path)
  path.write_bytes(b'{"name": "caf\xe9"}')
  with pytest.raises(DataError, match=r"manifest.json: not UTF-8"):
    ds_lib.load(tmp_path)


def _npz_with_header(tmp_path, shape, descr="<i8"):
  """A saved dataset whose train_offsets.npy header declares `shape` over 64 bytes of data."""
  import io
  import zipfile

  ds_lib.save(_tiny(), tmp_path)
  path = tmp_path / "data.npz"
  with zipfile.ZipFile(path) as z:
    members = {name: z.read(name) for name in z.namelist()}
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {"descr": descr, "fortran_order": False, "shape": shape}
  )
  members["train_offsets.npy"] = header.getvalue() + b"\0" * 64
  with zipfile.ZipFile(path, "w") as z:
    for name, data in members.items():
      z.writestr(name, data)


def test_array_header_larger_than_its_file_is_refused_before_allocating(tmp_path):
  # np.load would allocate 745 GiB for this header before reading its 64 bytes.
  _npz_with_header(tmp_path, (10**11,))
  with pytest.raises(
      DataError,
      match=r"data.npz: corrupt .*train_offsets.npy declares shape "
      r"\(100000000000,\) of int64, more than its",
  ):
    ds_lib.load(tmp_path)
  _npz_with_header(tmp_path, (8,))  # 64 bytes: read, then refused for what it holds
  with pytest.raises(DataError, match=r"data.npz: Sequences: offsets must run from 0"):
    ds_lib.load(tmp_path)


@pytest.mark.parametrize(
    "text", ["[" * 100_000, '{"num_items": 1' + "0" * 5000 + "}"], ids=["deep", "long_int"]
)
def test_manifest_json_that_python_cannot_hold_is_named(tmp_path, text):
  ds_lib.save(_tiny(), tmp_path)
  (tmp_path / "manifest.json").write_text(text)
  with pytest.raises(DataError, match=r"manifest.json: unreadable JSON .*rebuild"):
    ds_lib.load(tmp_path)
