"""Export: Flax variables -> bundle -> back, int8 codebooks, sizes, metrics at export."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from ccrec.benchmarks.ondevice import random_arrays
from ccrec.evaluation import ranking
from ccrec.item_layout import auto_item_factors, factorize_exact
from ccrec.models.recommender import SessionRecommender, init_variables
from ccrec.serving import bundle as bundle_lib
from ccrec.serving import evaluate as evaluate_lib
from ccrec.serving import export
from ccrec.serving.runtime import Recommender

NUM_ITEMS = 80


def _assert_same_tree(got, want, path="variables"):
  """Nested dicts with the same keys and bit-identical arrays (values and dtypes)."""
  if isinstance(want, dict):
    assert isinstance(got, dict) and set(got) == set(want), path
    for k in want:
      _assert_same_tree(got[k], want[k], f"{path}/{k}")
  else:
    assert np.asarray(got).dtype == np.asarray(want).dtype, path
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=path)


def _config(embedding="codes", encoder="transformer", **kw):
  config = {
      "num_items": NUM_ITEMS,
      "d": 8,
      "max_len": 5,
      "encoder": encoder,
      "readout": "soft_attention",
      "embedding": embedding,
  }
  if encoder == "transformer":
    config.update(num_blocks=1, num_heads=2, inner=16, layer_norm_eps=1e-12)
  else:
    config.update(gru_hidden=12, gru_layers=2)
  if embedding == "codes":
    config.update(num_codebooks=2, codebook_size=16, codebook_dtype="float32")
  config.update(kw)
  return config


def _variables(config, seed=0):
  arrays = random_arrays(config, np.random.default_rng(seed), scale=0.3)
  return export.spec_from_config(config), export.flax_variables(config, arrays), arrays


def _tt_config():
  tt = {
      "item_factors": list(auto_item_factors(NUM_ITEMS + 1, 3)),
      "d_factors": list(factorize_exact(8, 3)),
      "ranks": [2, 2],
  }
  return _config("tt", tt=tt)


@pytest.mark.parametrize(
    "config",
    [
        _config(),
        _config(codebook_dtype="int8"),
        _config("table"),
        _tt_config(),
        _config(encoder="gru4rec", readout="last"),
    ],
    ids=["codes", "int8", "table", "tt", "gru4rec"],
)
def test_bundle_layout_is_the_models_and_the_manifest_records_it(tmp_path, config):
  spec = export.spec_from_config(config)
  layout = export.bundle_layout(spec, config.get("codebook_dtype", "float32"))
  # The Flax model's own variables, initialised for real: same names and shapes.
  variables = init_variables(SessionRecommender(spec), jax.random.key(0))
  params = traverse_util.flatten_dict(variables["params"], sep="/")
  for name, a in params.items():
    if name == "items/codebooks" and config.get("codebook_dtype") == "int8":
      assert layout[name] == (a.shape, np.dtype(np.int8))
      assert layout["items/codebook_scale"] == (a.shape[:2], np.dtype(np.float32))
    else:
      assert layout[name] == (a.shape, np.dtype(np.float32)), name
  extra = {"items/codes", "items/codebook_scale"}
  assert set(layout) - set(params) <= extra
  if config["embedding"] == "codes":
    codes = variables["codes"]["items"]["codes"]
    assert layout["items/codes"] == (codes.shape[::-1], np.dtype(np.uint8))
  manifest = export.export_model(
      str(tmp_path), spec, variables, codebook_dtype=config.get("codebook_dtype", "float32")
  )
  assert {
      n: (tuple(e["shape"]), np.dtype(e["dtype"])) for n, e in manifest["arrays"].items()
  } == layout


def test_export_checks_the_variables_against_the_model(tmp_path):
  config = _config()
  spec, variables, _ = _variables(config)
  del variables["params"]["encoder"]["ln_in"]["bias"]
  with pytest.raises(
      bundle_lib.BundleError, match="array encoder/ln_in/bias float32 \\[8\\] is " "missing"
  ):
    export.export_model(str(tmp_path / "a"), spec, variables)
  spec, variables, _ = _variables(config)
  variables["params"]["encoder"]["block_0"]["query"]["kernel"] = np.zeros((8, 4), np.float32)
  with pytest.raises(
      bundle_lib.BundleError,
      match="encoder/block_0/query/kernel is float32 "
      "\\[8, 4\\], the model has float32 \\[8, 8\\]",
  ):
    export.export_model(str(tmp_path / "b"), spec, variables)
  spec, variables, _ = _variables(config)
  variables["params"]["readout"]["w3"] = {"kernel": np.zeros((8, 8), np.float32)}
  with pytest.raises(bundle_lib.BundleError, match="readout/w3/kernel.*not the model's"):
    export.export_model(str(tmp_path / "c"), spec, variables)
  assert list(tmp_path.iterdir()) == []  # nothing written


def test_quantize_codebooks_error_bound():
  rng = np.random.default_rng(0)
  books = rng.standard_normal((3, 5, 7)).astype(np.float32)
  books[1, 2] = 0.0
  q, scale = export.quantize_codebooks(books)
  assert q.dtype == np.int8 and scale.shape == (3, 5) and scale[1, 2] == 1.0
  assert np.abs(q).max() <= 127
  err = np.abs(q * scale[..., None] - books)
  assert np.all(err <= scale[..., None] / 2 + 1e-7)
  assert np.allclose(np.abs(q).max(-1)[scale != 1.0], 127)


@pytest.mark.parametrize(
    "embedding,encoder", [("codes", "transformer"), ("table", "transformer"), ("codes", "gru4rec")]
)
def test_export_round_trip(tmp_path, embedding, encoder):
  config = _config(embedding, encoder)
  spec, variables, arrays = _variables(config)
  counts = np.r_[0, np.arange(NUM_ITEMS) % 7]
  manifest = export.export_model(
      str(tmp_path), spec, variables, item_counts=counts, metrics={"student/test/HR@10": 0.5}
  )
  assert manifest["config"] == config and manifest["kind"] == embedding
  assert manifest["metrics"] == {"student/test/HR@10": 0.5}
  loaded_manifest, loaded = bundle_lib.read_bundle(str(tmp_path))
  for name, a in arrays.items():
    assert np.array_equal(loaded[name], a), name
  popular = loaded["meta/popular_items"]
  assert len(popular) == NUM_ITEMS and np.all(np.diff(counts[popular]) <= 0)
  back = export.flax_variables(loaded_manifest["config"], loaded)
  _assert_same_tree(back, variables)
  sizes = manifest["sizes"]
  assert sizes["fp32_table_bytes"] == (NUM_ITEMS + 1) * 8 * 4
  if embedding == "codes":
    assert sizes["item_bytes"] == 2 * (NUM_ITEMS + 1) + 2 * 16 * 8 * 4
  else:
    assert sizes["item_ratio"] == 1.0


def test_int8_codebooks(tmp_path):
  config = _config()
  spec, variables, _ = _variables(config)
  export.export_model(str(tmp_path / "fp32"), spec, variables)
  manifest = export.export_model(str(tmp_path / "int8"), spec, variables, codebook_dtype="int8")
  assert manifest["config"]["codebook_dtype"] == "int8"
  assert manifest["arrays"]["items/codebooks"]["dtype"] == "|i1"
  fp32 = Recommender.load(str(tmp_path / "fp32"), id_space="dense")
  int8 = Recommender.load(str(tmp_path / "int8"), id_space="dense")
  sessions = [np.array([1, 2, 3]), np.array([40, 7]), np.array([9])]
  a = fp32.scores(fp32.encode_dense(sessions))[:, 1:]
  b = int8.scores(int8.encode_dense(sessions))[:, 1:]
  assert np.abs(a - b).max() < 0.02 * np.abs(a).max()


def test_tt_export_config(tmp_path):
  config = _tt_config()
  spec, variables, _ = _variables(config)
  manifest = export.export_model(str(tmp_path), spec, variables)
  assert manifest["config"]["tt"] == config["tt"]
  assert manifest["sizes"]["item_ratio"] > 1


def test_runtime_metrics_at_export(tmp_path):
  config = _config()
  spec, variables, _ = _variables(config)
  rng = np.random.default_rng(3)
  prefixes = [rng.integers(1, NUM_ITEMS + 1, int(n)) for n in rng.integers(1, 9, 40)]
  targets = rng.integers(1, NUM_ITEMS + 1, 40)
  manifest = export.export_model(str(tmp_path), spec, variables, test=(prefixes, targets))
  rec = Recommender.load(str(tmp_path), id_space="dense")
  # Ranks by brute force: other items scoring >= the target (ties against it), no padding.
  want = []
  for p, t in zip(prefixes, targets, strict=True):
    scores = rec.scores(rec.encode_dense([p[-5:]]))[0]
    others = np.delete(scores[1:], t - 1)
    want.append(int((others >= scores[t]).sum()))
  assert np.array_equal(evaluate_lib.ranks(rec, prefixes, targets, batch_size=16), want)
  expected = ranking.metrics_from_ranks(np.array(want))
  for key, value in expected.items():
    assert manifest["metrics"][f"runtime/test/{key}"] == pytest.approx(value)


def test_raw_id_array():
  assert export.raw_id_array({}, 3) is None
  assert export.raw_id_array({"a": 1, "b": 2}, 3) is None  # does not cover 1..3
  assert export.raw_id_array({"a": 1, "b": 1, "c": 3}, 3) is None  # not one-to-one
  raw = export.raw_id_array({"x": 2, "y": 1, "z": 3}, 3)
  assert raw.tolist() == ["", "y", "x", "z"] and raw.dtype.kind == "U"


def test_export_refuses_non_finite_weights(tmp_path):
  config = _config()
  spec, variables, _ = _variables(config)
  variables["params"]["encoder"]["ln_in"]["bias"][3] = np.nan
  with pytest.raises(bundle_lib.BundleError, match="array encoder/ln_in/bias holds 1 non-finite"):
    export.export_model(str(tmp_path / "b"), spec, variables)
