"""Bundle format: round trip, sealed model fields, a clear error for every broken bundle."""

import dataclasses
import json
import os
import re

import jax
import numpy as np
import pytest

from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.serving import bundle as bundle_lib
from ccrec.serving import export
from ccrec.serving.bundle import BundleError, read_bundle, write_bundle
from ccrec.serving.export import export_model
from ccrec.serving.runtime import Recommender

CONFIG = {
    "num_items": 30,
    "d": 8,
    "num_blocks": 1,
    "num_heads": 2,
    "inner": 16,
    "max_len": 5,
    "readout": "soft_attention",
    "layer_norm_eps": 1e-12,
    "embedding": "codes",
    "num_codebooks": 2,
    "codebook_size": 4,
    "codebook_dtype": "float32",
}


def _arrays(seed=0):
  """Some arrays of a codes bundle (the format does not check them against a model: the
  export does, tests/test_serving_export.py)."""
  rng = np.random.default_rng(seed)
  f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  return {
      "encoder/ln_in/scale": f32(8),
      "encoder/ln_in/bias": f32(8),
      "encoder/block_0/query/kernel": f32(8, 8),
      "encoder/block_0/ff_in/kernel": f32(8, 16),
      "items/codes": rng.integers(0, 4, (2, 31), dtype=np.uint8),
      "items/codebooks": f32(2, 4, 8),
      "meta/popular_items": np.arange(1, 11, dtype=np.int32),
  }


@pytest.fixture
def bundle(tmp_path):
  path = str(tmp_path / "b")
  arrays = _arrays()
  write_bundle(path, arrays, kind="codes", config=CONFIG, metrics={"x": 1.0})
  return path, arrays


def _manifest(path):
  with open(os.path.join(path, "manifest.json")) as f:
    return json.load(f)


def _write_manifest(path, manifest, reseal=False):
  """reseal: recompute the checksum of the model fields, as if the export had written them
  (to reach the checks behind it)."""
  if reseal:
    manifest["manifest_sha256"] = bundle_lib.manifest_sha256(manifest)
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
  with pytest.raises(BundleError, match="kind"):
    write_bundle(str(tmp_path / "c"), _arrays(), kind="table", config=CONFIG)
  arrays = _arrays()
  arrays["meta/objects"] = np.array([{"a": 1}], dtype=object)
  with pytest.raises(BundleError, match="object"):
    write_bundle(str(tmp_path / "d"), arrays, kind="codes", config=CONFIG)


@pytest.mark.parametrize("version", [bundle_lib.FORMAT_VERSION + 1, 1])
def test_other_format_version_is_refused_saying_re_export(bundle, version):
  # 1: bundles written before the model fields were sealed.
  path, _ = bundle
  manifest = _manifest(path)
  manifest["format_version"] = version
  _write_manifest(path, manifest, reseal=True)
  with pytest.raises(BundleError, match=f"format_version {version} is not supported.*re-export"):
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
  with pytest.raises(
      BundleError, match=r"items\.codebooks\.npy of array items/codebooks is " "missing"
  ):
    read_bundle(path)


@pytest.mark.parametrize("field,value", [("shape", [31, 2]), ("dtype", "<u2")])
def test_manifest_entry_differs_from_its_file(bundle, field, value):
  path, _ = bundle
  manifest = _manifest(path)
  manifest["arrays"]["items/codes"][field] = value
  _write_manifest(path, manifest, reseal=True)
  with pytest.raises(
      BundleError,
      match=r"items\.codes\.npy holds \|u1 \[2, 31\], the manifest " "says array items/codes is",
  ):
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
  _write_manifest(path, manifest, reseal=True)
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
  open(file, "wb").write(data[: len(data) // 2])
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
  _write_manifest(path, manifest, reseal=True)
  with pytest.raises(BundleError, match="cannot be read as .npy"):
    read_bundle(path)


def test_bad_config(bundle):
  path, _ = bundle
  manifest = _manifest(path)
  manifest["config"]["readout"] = "mean"
  _write_manifest(path, manifest)
  with pytest.raises(BundleError, match="config.readout"):
    read_bundle(path)


@pytest.mark.parametrize(
    "field,value",
    [
        ("shape", None),
        ("shape", [2, -31]),
        ("shape", [2, 31.0]),
        ("shape", "2,31"),
        ("dtype", "u9"),
        ("dtype", None),
        ("dtype", "<c8"),
        ("dtype", [["a", "<u1"]]),
        ("sha256", "abc"),
        ("sha256", None),
        ("bytes", -1),
        ("bytes", "100"),
    ],
)
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
  _write_manifest(path, manifest, reseal=True)
  with pytest.raises(
      BundleError,
      match=r"items\.codebooks\.npy or its manifest entry "
      r"\(arrays\['items/codebooks'\]\.sha256",
  ):
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
  _write_manifest(path, manifest, reseal=True)
  for kw in ({}, {"verify": False}, {"mmap": True}):
    with pytest.raises(
        BundleError, match=r"items\.codebooks\.npy of array items/codebooks " "holds 1 non-finite"
    ):
      read_bundle(path, **kw)
  read_bundle(path, mmap=True, verify=False)  # neither reads all data: checked at query time


# ---------------------------------------------------------------------------- sealed model fields
# On a bundle exported from a Flax model, whose manifest is what the runtime computes with.


@pytest.fixture
def exported(tmp_path):
  spec = ModelSpec(
      num_items=30,
      d=8,
      num_blocks=1,
      num_heads=2,
      inner=16,
      max_len=5,
      embedding="codes",
      num_codebooks=2,
      codebook_size=4,
  )
  variables = init_variables(SessionRecommender(spec), jax.random.key(0))
  path = str(tmp_path / "exported")
  export_model(path, spec, variables, item_counts=np.arange(31))
  return path


def test_flipped_bit_in_a_model_field_is_refused(exported):
  # 1e-12 -> 1e-02 (one bit of one character): a valid epsilon that changes every score.
  file = os.path.join(exported, "manifest.json")
  text = open(file).read()
  assert text.count("1e-12") == 1
  open(file, "w").write(text.replace("1e-12", "1e-02"))
  with pytest.raises(BundleError, match="checksum mismatch of the model fields"):
    Recommender.load(exported)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["config"].update(num_heads=4),
        lambda m: m["config"].update(readout="last"),
        lambda m: m["config"].update(layer_norm_eps=1e-5),
        lambda m: m["arrays"]["items/codes"].update(shape=[31, 2]),
        lambda m: m["arrays"].pop("meta/popular_items"),
        lambda m: m.update(manifest_sha256="0" * 64),
    ],
    ids=["num_heads", "readout", "layer_norm_eps", "shape", "array removed", "checksum"],
)
def test_hand_edited_model_fields_are_refused(exported, edit):
  manifest = _manifest(exported)
  edit(manifest)
  _write_manifest(exported, manifest)
  with pytest.raises(BundleError, match="checksum mismatch of the model fields"):
    Recommender.load(exported)


def test_informational_fields_are_not_sealed(exported):
  manifest = _manifest(exported)
  manifest["metrics"] = {"x": 2.0}
  manifest["notes"] = "hand-written"
  _write_manifest(exported, manifest)
  assert read_bundle(exported)[0]["metrics"] == {"x": 2.0}
  bundle_lib.update_manifest(exported, {"verification": {"examples": 3}})
  assert read_bundle(exported)[0]["verification"] == {"examples": 3}
  with pytest.raises(BundleError, match="cannot change"):
    bundle_lib.update_manifest(exported, {"manifest_sha256": "0" * 64})


def test_bundle_without_checksum_is_refused_saying_re_export(exported):
  manifest = _manifest(exported)
  manifest.pop("manifest_sha256", None)
  _write_manifest(exported, manifest)
  with pytest.raises(BundleError, match="'manifest_sha256' is missing.*re-export"):
    Recommender.load(exported)


def test_bundle_of_format_version_1_is_refused_saying_re_export(exported):
  # Format 1: written before the model fields were sealed.
  manifest = _manifest(exported)
  manifest["format_version"] = 1
  _write_manifest(exported, manifest)
  with pytest.raises(BundleError, match="format_version 1 is not supported.*re-export"):
    Recommender.load(exported)


@pytest.mark.parametrize(
    "field,value",
    [
        ("layer_norm_eps", "abc"),
        ("layer_norm_eps", -1.0),
        ("layer_norm_eps", 0),
        ("layer_norm_eps", True),
        ("layer_norm_eps", 2.0),
        ("num_heads", True),
        ("num_heads", 3),
        ("d", 8.0),
        ("max_len", 0),
        ("codebook_size", 70000),
        ("codebook_size", 4.0),
        ("num_codebooks", "2"),
        ("codebook_dtype", "int4"),
        ("readout", "mean"),
        ("embedding", "mlp"),
        ("extra", 1),
    ],
)
def test_every_config_field_is_validated_at_load(exported, field, value):
  # The field is named (checked before the seal), so a value no export writes is an error
  # at load, not a ValueError at the first recommendation.
  manifest = _manifest(exported)
  manifest["config"][field] = value
  if field == "embedding":
    manifest["kind"] = value
  _write_manifest(exported, manifest)
  name = {"extra": "unknown field", "embedding": "kind"}.get(field, f"config.{field}")
  with pytest.raises(BundleError, match=re.escape(name)):
    Recommender.load(exported)


@pytest.mark.parametrize(
    "tt,field",
    [
        ({"item_factors": [4, 8], "d_factors": [2, 4], "ranks": []}, "tt"),
        ({"item_factors": [4, "8"], "d_factors": [2, 4], "ranks": [3]}, "tt.item_factors"),
        ({"item_factors": [4, 4], "d_factors": [2, 4], "ranks": [3]}, "tt.item_factors"),
        ({"item_factors": [4, 8], "d_factors": [2, 2], "ranks": [3]}, "tt.d_factors"),
        ({"item_factors": [4, 8], "d_factors": [2, 4]}, "tt"),
    ],
)
def test_tt_config_is_validated(tmp_path, tt, field):
  config = {**{k: v for k, v in CONFIG.items() if "codebook" not in k}, "embedding": "tt", "tt": tt}
  with pytest.raises(BundleError, match=re.escape(f"config.{field}")):
    write_bundle(str(tmp_path / "b"), {}, kind="tt", config=config)


def test_damaged_npy_header_is_a_bundle_error_without_verify(exported):
  # verify=False reads no checksum: the header is what numpy parses (its parser raises
  # ValueError, SyntaxError or tokenize.TokenError, depending on the byte).
  file = os.path.join(exported, "items.codebooks.npy")
  data = open(file, "rb").read()
  damaged = bytearray(data)
  damaged[10] ^= 0x01  # '{' -> 'z': tokenize.TokenError inside numpy
  open(file, "wb").write(bytes(damaged))
  with pytest.raises(
      BundleError, match=r"items\.codebooks\.npy of array items/codebooks " "cannot be read as .npy"
  ):
    read_bundle(exported, verify=False)
  for i in range(8, data.index(b"\n")):  # every byte of the header
    damaged = bytearray(data)
    damaged[i] ^= 0x01
    open(file, "wb").write(bytes(damaged))
    try:
      read_bundle(exported, verify=False)
    except BundleError as e:
      assert "items.codebooks.npy" in str(e)


# ---------------------------------------------------------------------------- encoders


def test_manifest_without_encoder_is_the_transformer(exported):
  manifest = _manifest(exported)
  assert manifest["config"]["encoder"] == "transformer"
  sessions = [np.array([3, 7, 1]), np.array([12])]
  want = Recommender.load(exported, id_space="dense").recommend_batch(sessions, 5)
  del manifest["config"]["encoder"]  # a config without the field
  _write_manifest(exported, manifest, reseal=True)
  rec = Recommender.load(exported, id_space="dense")
  assert rec.encoder == "transformer"
  for a, b in zip(rec.recommend_batch(sessions, 5), want, strict=True):
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_unknown_encoder_is_named(exported):
  manifest = _manifest(exported)
  manifest["config"]["encoder"] = "lstm"
  _write_manifest(exported, manifest, reseal=True)
  with pytest.raises(BundleError, match="config.encoder 'lstm' is not an encoder this runtime"):
    Recommender.load(exported)
  # A manifest handed to the runtime without read_bundle's checks: named as well.
  with pytest.raises(BundleError, match="encoder 'lstm' is not one this runtime serves"):
    Recommender(manifest, {})


GRU_SPEC = ModelSpec(
    num_items=30,
    d=8,
    max_len=5,
    encoder="gru4rec",
    gru_hidden=12,
    gru_layers=2,
    readout="last",
    embedding="codes",
    num_codebooks=2,
    codebook_size=4,
)


@pytest.fixture
def gru_exported(tmp_path):
  variables = init_variables(SessionRecommender(GRU_SPEC), jax.random.key(1))
  # Weights larger than the 0.02 init, so that sessions get visibly different states.
  variables = jax.tree.map(lambda a: a * 20 if a.dtype == np.float32 else a, variables)
  path = str(tmp_path / "gru")
  export_model(path, GRU_SPEC, variables, item_counts=np.arange(31))
  return path, variables


def test_gru4rec_bundle_round_trip(gru_exported):
  path, variables = gru_exported
  manifest, arrays = read_bundle(path)
  config = manifest["config"]
  assert config["encoder"] == "gru4rec"
  assert (config["gru_hidden"], config["gru_layers"], config["readout"]) == (12, 2, "last")
  assert not {"num_blocks", "num_heads", "inner", "layer_norm_eps"} & set(config)
  assert arrays["encoder/gru_1/hn/kernel"].shape == (12, 12)
  assert export.spec_from_config(config) == dataclasses.replace(
      GRU_SPEC, dropout=0.0, attn_dropout=0.0
  )
  back = export.flax_variables(config, arrays)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Verified against the Flax model, as launch/export.py does.
  rng = np.random.default_rng(0)
  prefixes = [rng.integers(1, 31, int(n)) for n in rng.integers(1, 9, 30)]
  check = export.verify_bundle(path, GRU_SPEC, prefixes, batch_size=16)
  assert check["examples"] == 30 and check["different"] == 0
  assert check["identical"] + check["tie_only"] == 30
  assert read_bundle(path)[0]["verification"] == check
  rec = Recommender.load(path, id_space="dense")
  assert rec.encoder == "gru4rec"
  a, b = rec.recommend_batch([[1, 2, 3], [3, 2, 1]], 5)
  assert not np.array_equal(a.scores, b.scores)  # the order of the clicks matters


@pytest.mark.parametrize(
    "edit,error",
    [
        (lambda c: c.update(gru_hidden=0), "config.gru_hidden must be a positive integer"),
        (lambda c: c.update(gru_layers=1.0), "config.gru_layers must be a positive integer"),
        (lambda c: c.pop("gru_layers"), r"config lacks \['gru_layers'\]"),
        (lambda c: c.update(num_heads=2), r"unknown field\(s\) \['num_heads'\] for encoder"),
        (lambda c: c.update(readout="max"), "config.readout must be one of"),
    ],
    ids=["hidden", "layers", "missing", "transformer field", "readout"],
)
def test_gru4rec_config_is_validated(gru_exported, edit, error):
  path, _ = gru_exported
  manifest = _manifest(path)
  edit(manifest["config"])
  _write_manifest(path, manifest, reseal=True)
  with pytest.raises(BundleError, match=error):
    Recommender.load(path)
