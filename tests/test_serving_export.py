"""Export: Flax variables -> bundle -> back, int8 codebooks, sizes, metrics at export."""

import numpy as np
import pytest

from ccrec.evaluation import ranking
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


def _config(embedding="codes", **kw):
  config = {"num_items": NUM_ITEMS, "d": 8, "num_blocks": 1, "num_heads": 2, "inner": 16,
            "max_len": 5, "readout": "soft_attention", "layer_norm_eps": 1e-12,
            "embedding": embedding}
  if embedding == "codes":
    config.update(num_codebooks=2, codebook_size=16, codebook_dtype="float32")
  config.update(kw)
  return config


def _variables(config, seed=0):
  arrays = bundle_lib.random_arrays(config, np.random.default_rng(seed), scale=0.3)
  return export.spec_from_config(config), export.flax_variables(config, arrays), arrays


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


@pytest.mark.parametrize("embedding", ["codes", "table"])
def test_export_round_trip(tmp_path, embedding):
  config = _config(embedding)
  spec, variables, arrays = _variables(config)
  counts = np.r_[0, np.arange(NUM_ITEMS) % 7]
  manifest = export.export_model(str(tmp_path), spec, variables, item_counts=counts,
                                 metrics={"student/test/HR@10": 0.5})
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
  from ccrec.models.tt import auto_item_factors, factorize_exact
  tt = {"item_factors": list(auto_item_factors(NUM_ITEMS + 1, 3)),
        "d_factors": list(factorize_exact(8, 3)), "ranks": [2, 2]}
  config = _config("tt", tt=tt)
  spec, variables, _ = _variables(config)
  manifest = export.export_model(str(tmp_path), spec, variables)
  assert manifest["config"]["tt"] == tt
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
