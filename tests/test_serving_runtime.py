"""The numpy runtime: equals the Flax model (transformer and GRU4Rec encoders), imports no jax,
handles bad input."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.benchmarks.ondevice import random_arrays
from ccrec.models.recommender import SessionRecommender
from ccrec.models.tt import auto_item_factors, factorize_exact
from ccrec.serving import bundle as bundle_lib
from ccrec.serving.export import export_model, flax_variables, spec_from_config
from ccrec.serving.runtime import (
    EmptySessionError,
    InvalidSessionError,
    Recommender,
    UnknownItemError,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_ITEMS, MAX_LEN = 120, 6


def _config(embedding="codes", readout="soft_attention", num_blocks=2):
  config = {
      "num_items": NUM_ITEMS,
      "d": 16,
      "num_blocks": num_blocks,
      "num_heads": 2,
      "inner": 32,
      "max_len": MAX_LEN,
      "readout": readout,
      "layer_norm_eps": 1e-12,
      "embedding": embedding,
  }
  if embedding == "codes":
    config.update(num_codebooks=3, codebook_size=8, codebook_dtype="float32")
  if embedding == "tt":
    config["tt"] = {
        "item_factors": list(auto_item_factors(NUM_ITEMS + 1, 3)),
        "d_factors": list(factorize_exact(16, 3)),
        "ranks": [3, 3],
    }
  return config


def _gru_config(embedding="codes", readout="last", layers=2, encoder="gru4rec"):
  """A GRU4Rec (or NARM) bundle's config: the GRU's sizes instead of the transformer's."""
  transformer = ("num_blocks", "num_heads", "inner", "layer_norm_eps")
  config = {k: v for k, v in _config(embedding, readout).items() if k not in transformer}
  config.update(encoder=encoder, gru_hidden=24, gru_layers=layers)
  return config


def _model(config, seed=0):
  """(model, Flax variables, spec) with random weights, built in numpy (no init compile)."""
  arrays = random_arrays(config, np.random.default_rng(seed), scale=0.3)
  spec = spec_from_config(config)
  return SessionRecommender(spec), flax_variables(config, arrays), spec


def _sessions(rng, n=24):
  lengths = np.concatenate([[1, MAX_LEN, MAX_LEN + 4], rng.integers(1, MAX_LEN + 6, n - 3)])
  return [rng.integers(1, NUM_ITEMS + 1, size=int(n)) for n in lengths]


def _jax_scores(model, variables, sessions):
  items = np.zeros((len(sessions), MAX_LEN), np.int32)
  for i, s in enumerate(sessions):
    kept = s[-MAX_LEN:]  # left-aligned, last max_len items (docs/DESIGN.md)
    items[i, : len(kept)] = kept

  @jax.jit
  def forward(variables, items):
    s = model.apply(variables, items)["session"]
    return s, model.apply(variables, s, None, method="score")

  s, scores = forward(variables, jnp.asarray(items))
  return np.asarray(s), np.asarray(scores)


def assert_same_top(jax_scores, ids, k, rtol=1e-5):
  """ids equals the JAX top-k (by score, ties by id) except where JAX's scores (nearly) tie."""
  want = np.lexsort((np.arange(len(jax_scores)), -jax_scores))[:k]
  if np.array_equal(want, ids):
    return
  tol = rtol * np.abs(jax_scores[1:]).max()
  assert np.all(np.abs(jax_scores[want] - jax_scores[ids]) <= tol), (want, ids)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
  out = {}
  counts = np.arange(NUM_ITEMS + 1)[::-1].copy()
  counts[0] = 0
  # One block for table and tt: each reference model costs a jit compilation.
  for name, config in {
      "codes": _config(),
      "table": _config("table", num_blocks=1),
      "tt": _config("tt", "last", num_blocks=1),
      "gru": _gru_config(),
      "gru_table": _gru_config("table", "soft_attention", layers=1),
      "narm": _gru_config("codes", "narm", layers=1, encoder="narm"),
  }.items():
    model, variables, spec = _model(config)
    path = str(tmp_path_factory.mktemp(name))
    export_model(path, spec, variables, item_counts=counts)
    out[name] = (model, variables, path)
  return out


@pytest.mark.parametrize("name", ["codes", "table", "tt", "gru", "gru_table", "narm"])
def test_runtime_equals_flax_model(bundles, name):
  model, variables, path = bundles[name]
  rec = Recommender.load(path, id_space="dense")
  assert rec.encoder == {"gru": "gru4rec", "gru_table": "gru4rec", "narm": "narm"}.get(
      name, "transformer"
  )
  sessions = _sessions(np.random.default_rng(1))
  s_jax, scores_jax = _jax_scores(model, variables, sessions)
  s_np = rec.encode_dense([s[-MAX_LEN:] for s in sessions])
  assert np.allclose(s_np, s_jax, rtol=1e-4, atol=1e-5 * np.abs(s_jax).max())
  scores = rec.scores(s_np)
  assert np.all(scores[:, 0] == -np.inf)
  assert np.allclose(scores[:, 1:], scores_jax[:, 1:], atol=1e-5 * np.abs(scores_jax[:, 1:]).max())
  batch = rec.recommend_batch(sessions, k=20)
  for i, session in enumerate(sessions):
    single = rec.recommend(session, k=20)
    assert np.array_equal(single.ids, batch[i].ids)
    assert single.items == [int(x) for x in single.ids]  # no id map: dense ids
    assert np.all(np.diff(single.scores) <= 0) and not single.fallback
    assert_same_top(scores_jax[i], single.ids, 20)


def test_tt_cache_gives_the_same_recommendations(bundles):
  _, _, path = bundles["tt"]
  sessions = _sessions(np.random.default_rng(2), 5)
  a = Recommender.load(path).recommend_batch(sessions, 10)
  b = Recommender.load(path, tt_cache=True).recommend_batch(sessions, 10)
  assert all(np.array_equal(x.ids, y.ids) for x, y in zip(a, b, strict=True))


def test_runtime_imports_no_jax(bundles):
  _, _, path = bundles["codes"]
  code = (
      "import sys\n"
      "import ccrec.serving, ccrec.serving.runtime, ccrec.serving.bundle\n"
      "import ccrec.serving.scoring, ccrec.serving.evaluate\n"
      "from ccrec.serving.runtime import Recommender\n"
      f"rec = Recommender.load({path!r})\n"
      "r = rec.recommend([3, 4, 5], k=5)\n"
      "assert len(r.ids) == 5\n"
      "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', "
      "'optax', 'orbax', 'ccrec.models'))\n"
      "bad += [m for m in sys.modules if m.startswith(('ccrec.models', 'ccrec.train'))]\n"
      "print('BAD', bad)\n"
      "assert not bad, bad\n"
  )
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
  )
  assert result.returncode == 0, result.stderr
  assert "BAD []" in result.stdout


def test_unknown_ids_skip_or_error(bundles):
  _, _, path = bundles["codes"]
  rec = Recommender.load(path)
  want = rec.recommend([3, 4], k=5)
  for junk in (
      [0, 3, -1, 4, NUM_ITEMS + 1, 10**12],
      [3, 2.5, "x", None, 4, True, [1]],
      np.array([3, 0, 4, 999]),
      [True, 3, 4],
      [3, np.bool_(True), 4],
  ):
    got = rec.recommend(junk, k=5)
    assert np.array_equal(got.ids, want.ids) and len(got.skipped) == len(junk) - 2
  assert rec.recommend(["3", "4"], k=5).ids.tolist() == want.ids.tolist()  # digit strings
  strict = Recommender.load(path, on_unknown="error")
  with pytest.raises(UnknownItemError, match="unknown item ids"):
    strict.recommend([3, NUM_ITEMS + 1], k=5)
  with pytest.raises(UnknownItemError):
    strict.recommend([3, 0], k=5)
  with pytest.raises(TypeError, match="not a single string"):
    rec.recommend("34", k=5)


@pytest.mark.parametrize(
    "session,kind",
    [
        (None, "not None"),
        ({1: 2}, r"not a mapping \(dict\)"),
        ({3, 4}, r"not a set \(set\)"),
        (3, r"not a single value \(int 3\)"),
        (2.5, "single value"),
        (b"34", "single string"),
        (np.array([[3, 4]]), "not a 2-D array"),
        (np.array(3), "not a 0-D array"),
    ],
)
def test_a_session_that_is_not_a_sequence_of_ids_is_named(bundles, session, kind):
  _, _, path = bundles["codes"]
  rec = Recommender.load(path)
  with pytest.raises(
      InvalidSessionError, match=f"a session must be a sequence of item ids.*" f"{kind}"
  ):
    rec.recommend(session, k=5)
  with pytest.raises(InvalidSessionError, match="the batch must be a sequence of sessions"):
    rec.recommend_batch(None, k=5)
  assert issubclass(InvalidSessionError, TypeError)
  want = rec.recommend([3, 4], k=5).ids.tolist()
  for fine in ((3, 4), iter([3, 4]), np.array([3, 4]), [np.int64(3), 4]):
    assert rec.recommend(fine, k=5).ids.tolist() == want
  assert [r.ids.tolist() for r in rec.recommend_batch(np.array([[3, 4], [3, 4]]), k=5)] == [
      want,
      want,
  ]  # a 2-D array is a batch of sessions


def test_empty_session_popularity_or_error(bundles):
  _, _, path = bundles["codes"]
  rec = Recommender.load(path)
  for empty in ([], [0, -5], np.array([], np.int64)):
    r = rec.recommend(empty, k=4)
    assert r.fallback and r.ids.tolist() == [1, 2, 3, 4]  # training counts decrease with the id
    assert np.isnan(r.scores).all()
  mixed = rec.recommend_batch([[], [3, 4]], k=4)
  assert mixed[0].fallback and not mixed[1].fallback
  assert np.array_equal(mixed[1].ids, rec.recommend([3, 4], k=4).ids)
  with pytest.raises(EmptySessionError, match="no known items"):
    Recommender.load(path, on_empty="error").recommend([], k=4)


def test_k_and_exclude_seen(bundles):
  _, _, path = bundles["codes"]
  rec = Recommender.load(path)
  assert len(rec.recommend([1, 2], k=10**6).ids) == NUM_ITEMS  # clipped to V
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match="positive integer"):
      rec.recommend([1, 2], k=bad)
  seen = rec.recommend([5, 6, 7], k=NUM_ITEMS, exclude_seen=True)
  assert len(seen.ids) == NUM_ITEMS - 3 and not {5, 6, 7} & set(seen.ids.tolist())
  batch = rec.recommend_batch([[5, 6, 7], [8]], k=10, exclude_seen=True)
  assert not {5, 6, 7} & set(batch[0].ids.tolist()) and 8 not in batch[1].ids


def test_raw_id_map(tmp_path):
  _, variables, spec = _model(_config())
  id_map = {f"item{(i * 7) % NUM_ITEMS + 1}": i for i in range(1, NUM_ITEMS + 1)}
  export_model(str(tmp_path), spec, variables, id_map=id_map)
  raw = Recommender.load(str(tmp_path))
  dense = Recommender.load(str(tmp_path), id_space="dense")
  inverse = {v: k for k, v in id_map.items()}
  r = raw.recommend([inverse[3], "nope", inverse[9]], k=5)
  d = dense.recommend([3, 9], k=5)
  assert r.skipped == ("nope",)
  assert np.array_equal(r.ids, d.ids) and r.items == [inverse[i] for i in d.ids.tolist()]
  with pytest.raises(EmptySessionError, match="no popularity list"):
    raw.recommend([3, 9], k=5)  # dense ints are not raw ids; no item counts were exported


def test_exclude_seen_covers_items_beyond_max_len(bundles):
  _, _, path = bundles["codes"]
  rec = Recommender.load(path)
  session = [5, 6, 7, 40, 41, 42, 43, 44, 45]  # longer than MAX_LEN: 5, 6, 7 are not encoded
  plain = rec.recommend(session, k=NUM_ITEMS)
  assert np.array_equal(plain.ids, rec.recommend(session[-MAX_LEN:], k=NUM_ITEMS).ids)
  for got in (
      rec.recommend(session, k=NUM_ITEMS, exclude_seen=True),
      rec.recommend_batch([session, [8]], k=NUM_ITEMS, exclude_seen=True)[0],
  ):
    want = [i for i in plain.ids.tolist() if i not in session]
    assert got.ids.tolist() == want and len(want) == NUM_ITEMS - len(session)


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_pruned_top_k_equals_the_full_scan(bundles, exclude_seen):
  _, _, path = bundles["codes"]
  full = Recommender.load(path, id_space="dense")
  pruned = Recommender.load(path, id_space="dense", pruned=True)
  assert pruned.scorer.index is not None
  manifest, arrays = bundle_lib.read_bundle(path)
  codes = arrays["items/codes"][:, 1:]
  assert len(np.unique(codes, axis=1).T) < NUM_ITEMS  # items sharing a code: tied scores
  sessions = _sessions(np.random.default_rng(3), 40)
  for k in (1, 5, 20, NUM_ITEMS - 2, NUM_ITEMS):
    want = full.recommend_batch(sessions, k, exclude_seen=exclude_seen)
    got = pruned.recommend_batch(sessions, k, exclude_seen=exclude_seen)
    for a, b in zip(want, got, strict=True):
      assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)
    one = pruned.recommend(sessions[0], k, exclude_seen=exclude_seen)
    assert np.array_equal(one.ids, want[0].ids)


def test_pruned_needs_a_codes_bundle(bundles):
  with pytest.raises(ValueError, match="pruned=True needs a codes bundle.*'table'"):
    Recommender.load(bundles["table"][2], pruned=True)


@pytest.mark.parametrize("pruned", [False, True])
@pytest.mark.parametrize("name", ["encoder/block_0/ff_in/kernel", "items/codebooks"])
def test_non_finite_scores_raise(bundles, name, pruned):
  _, _, path = bundles["codes"]
  manifest, arrays = bundle_lib.read_bundle(path)
  arrays = dict(arrays)
  arrays[name] = arrays[name].copy()
  arrays[name].reshape(-1)[0] = np.nan  # built in memory: read_bundle's check is bypassed
  rec = Recommender(manifest, arrays, pruned=pruned)
  with pytest.raises(bundle_lib.BundleError, match="not finite"):
    rec.recommend([1, 2, 3], k=5)
  with pytest.raises(bundle_lib.BundleError, match="not finite"):
    rec.recommend_batch([[1, 2, 3], [4]], k=5, exclude_seen=True)
  assert rec.recommend([], k=3).fallback  # the popularity fallback needs no scores
