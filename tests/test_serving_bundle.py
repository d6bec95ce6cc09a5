"""Bundle format: round trip, and a clear error for every kind of broken bundle."""

import json
import os
import re

import numpy as np
import pytest

from ccrec.serving import bundle as bundle_lib
from ccrec.serving.bundle import BundleError, read_bundle, write_bundle

CONFIG = {"num_items": 30, "d": 8, "num_blocks": 1, "num_heads": 2, "inner": 16, "max_len": 5,
          "readout": "soft_attention", "layer_norm_eps": 1e-12, "embedding": "codes",
          "num_codebooks": 2, "codebook_size": 4, "codebook_dtype": "float32"}


def _arrays(config=CONFIG, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for name, (shape, dtype) in bundle_lib.expected_arrays(config).items():
    if dtype.kind == "u":
      out[name] = rng.integers(0, config["codebook_size"], shape, dtype=dtype)
    else:
      out[name] = rng.standard_normal(shape).astype(dtype)
  out["meta/popular_items"] = np.arange(1, 11, dtype=np.int32)
  return out


@pytest.fixture
def bundle(tmp_path):
  path = str(tmp_path / "b")
  arrays = _arrays()
  write_bundle(path, arrays, kind="codes", config=CONFIG, metrics={"x": 1.0})
  return path, arrays


def _manifest(path):
  with open(os.path.join(path, "manifest.json")) as f:
    return json.load(f)


def _write_manifest(path, manifest):
  with open(os.path.join(path, "manifest.json"), "w") as f:
    json.dump(manifest, f)


def test_round_trip(bundle):
  path, arrays = bundle
  manifest, loaded = read_bundle(path)
  assert manifest["format_version"] == bundle_lib.FORMAT_VERSION
  assert manifest["kind"] == "codes" and manifest["config"] == CONFIG
  assert manifest["metrics"] == {"x": 1.0}
  assert set(loaded) == set(arrays)
  for name, a in arrays.items():
    assert loaded[name].dtype == a.dtype and np.array_equal(loaded[name], a)
    entry = manifest["arrays"][name]
    assert entry["shape"] == list(a.shape) and len(entry["sha256"]) == 64
  assert loaded["items/codes"].shape == (2, 31)  # codebook-major [M, V+1]
  mm = read_bundle(path, mmap=True)[1]
  assert isinstance(mm["items/codes"], np.memmap)


def test_refuses_to_overwrite_and_overwrites(bundle):
  path, arrays = bundle
  with pytest.raises(BundleError, match="already holds a bundle"):
    write_bundle(path, arrays, kind="codes", config=CONFIG)
  write_bundle(path, _arrays(seed=1), kind="codes", config=CONFIG, overwrite=True)
  assert not np.array_equal(read_bundle(path)[1]["items/codebooks"], arrays["items/codebooks"])


def test_write_checks_arrays(tmp_path):
  arrays = _arrays()
  del arrays["encoder/ln_in/bias"]
  with pytest.raises(BundleError, match="encoder/ln_in/bias is missing"):
    write_bundle(str(tmp_path / "a"), arrays, kind="codes", config=CONFIG)
  arrays = _arrays()
  arrays["items/codes"] = arrays["items/codes"].T.copy()
  with pytest.raises(BundleError, match="items/codes"):
    write_bundle(str(tmp_path / "b"), arrays, kind="codes", config=CONFIG)
  with pytest.raises(BundleError, match="kind"):
    write_bundle(str(tmp_path / "c"), _arrays(), kind="table", config=CONFIG)
  arrays = _arrays()
  arrays["meta/objects"] = np.array([{"a": 1}], dtype=object)
  with pytest.raises(BundleError, match="object"):
    write_bundle(str(tmp_path / "d"), arrays, kind="codes", config=CONFIG)


def test_other_format_version(bundle):
  path, _ = bundle
  manifest = _manifest(path)
  manifest["format_version"] = 2
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match="format_version 2 is not supported"):
    read_bundle(path)


def test_not_a_bundle(tmp_path):
  with pytest.raises(BundleError, match="does not exist"):
    read_bundle(str(tmp_path / "nope"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(BundleError, match="manifest.json not found"):
    read_bundle(str(tmp_path / "empty"))
  os.makedirs(tmp_path / "bad")
  (tmp_path / "bad" / "manifest.json").write_text("{not json")
  with pytest.raises(BundleError, match="not valid JSON"):
    read_bundle(str(tmp_path / "bad"))


def test_missing_array_file(bundle):
  path, _ = bundle
  os.remove(os.path.join(path, "items.codebooks.npy"))
  with pytest.raises(BundleError, match=r"items\.codebooks\.npy of array items/codebooks is "
                                        "missing"):
    read_bundle(path)


def test_array_missing_from_manifest(bundle):
  path, _ = bundle
  manifest = _manifest(path)
  del manifest["arrays"]["encoder/block_0/query/kernel"]
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match="encoder/block_0/query/kernel is missing"):
    read_bundle(path)


@pytest.mark.parametrize("field,value", [("shape", [31, 2]), ("dtype", "<u2")])
def test_manifest_shape_or_dtype_differs_from_config(bundle, field, value):
  path, _ = bundle
  manifest = _manifest(path)
  manifest["arrays"]["items/codes"][field] = value
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match="items/codes is listed as"):
    read_bundle(path)


def test_file_holds_other_shape(bundle):
  path, _ = bundle
  # A valid .npy with the recorded size and checksum but another shape.
  file = os.path.join(path, "meta.popular_items.npy")
  np.save(file, np.arange(1, 11, dtype=np.int32).reshape(2, 5))
  manifest = _manifest(path)
  entry = manifest["arrays"]["meta/popular_items"]
  entry["bytes"] = os.path.getsize(file)
  entry["sha256"] = bundle_lib._sha256(file)
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match=r"meta\.popular_items\.npy holds <i4 \[2, 5\]"):
    read_bundle(path)


def test_checksum_mismatch(bundle):
  path, _ = bundle
  file = os.path.join(path, "items.codebooks.npy")
  data = bytearray(open(file, "rb").read())
  data[-1] ^= 0xFF  # same size, one byte changed
  open(file, "wb").write(bytes(data))
  with pytest.raises(BundleError, match=r"checksum mismatch for file items\.codebooks\.npy"):
    read_bundle(path)
  read_bundle(path, verify=False)  # the size and header still check out


def test_truncated_file(bundle):
  path, _ = bundle
  file = os.path.join(path, "items.codes.npy")
  data = open(file, "rb").read()
  open(file, "wb").write(data[:len(data) // 2])
  with pytest.raises(BundleError, match=r"items\.codes\.npy of array items/codes is truncated"):
    read_bundle(path)


def test_never_unpickles(bundle):
  path, _ = bundle
  # An object-array .npy (needs pickle) with a matching manifest entry must not load.
  file = os.path.join(path, "meta.popular_items.npy")
  np.save(file, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
  manifest = _manifest(path)
  entry = manifest["arrays"]["meta/popular_items"]
  entry["bytes"] = os.path.getsize(file)
  entry["sha256"] = bundle_lib._sha256(file)
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match="cannot be read as .npy"):
    read_bundle(path)


def test_bad_config(bundle):
  path, _ = bundle
  manifest = _manifest(path)
  manifest["config"]["readout"] = "mean"
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match="config.readout"):
    read_bundle(path)


@pytest.mark.parametrize("field,value", [
    ("shape", None), ("shape", [2, -31]), ("shape", [2, 31.0]), ("shape", "2,31"),
    ("dtype", "u9"), ("dtype", None), ("dtype", "<c8"), ("dtype", [["a", "<u1"]]),
    ("sha256", "abc"), ("sha256", None), ("bytes", -1), ("bytes", "100")])
def test_bad_manifest_entry_names_bundle_array_and_field(bundle, field, value):
  path, _ = bundle
  manifest = _manifest(path)
  manifest["arrays"]["items/codes"][field] = value
  _write_manifest(path, manifest)
  where = re.escape(os.path.join(path, "manifest.json"))
  with pytest.raises(BundleError, match=rf"{where}: array items/codes: field '{field}'"):
    read_bundle(path)


def test_manifest_entry_not_an_object(bundle):
  path, _ = bundle
  manifest = _manifest(path)
  manifest["arrays"]["meta/popular_items"] = "x"
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match="array meta/popular_items: expected a JSON object"):
    read_bundle(path)


def test_checksum_changed_in_manifest(bundle):
  path, _ = bundle
  manifest = _manifest(path)
  manifest["arrays"]["items/codebooks"]["sha256"] = "0" * 64
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match=r"items\.codebooks\.npy or its manifest entry "
                                        r"\(arrays\['items/codebooks'\]\.sha256"):
    read_bundle(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_write_refuses_non_finite_floats(tmp_path, value):
  arrays = _arrays()
  arrays["encoder/block_0/ff_in/kernel"][0, 0] = value
  with pytest.raises(BundleError, match="array encoder/block_0/ff_in/kernel holds 1 non-finite"):
    write_bundle(str(tmp_path / "b"), arrays, kind="codes", config=CONFIG)
  assert not os.path.exists(tmp_path / "b" / "manifest.json")


def test_read_refuses_non_finite_floats(bundle):
  path, _ = bundle
  # A NaN weight with a matching manifest entry (size and checksum recomputed).
  file = os.path.join(path, "items.codebooks.npy")
  books = np.load(file)
  books[1, 2, 3] = np.nan
  np.save(file, books)
  manifest = _manifest(path)
  manifest["arrays"]["items/codebooks"]["sha256"] = bundle_lib._sha256(file)
  _write_manifest(path, manifest)
  for kw in ({}, {"verify": False}, {"mmap": True}):
    with pytest.raises(BundleError, match=r"items\.codebooks\.npy of array items/codebooks "
                                          "holds 1 non-finite"):
      read_bundle(path, **kw)
  read_bundle(path, mmap=True, verify=False)  # neither reads all data: checked at query time
