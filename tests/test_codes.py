"""Tests for ccrec.models.codes (compositional-code item embeddings)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccrec.models import codes as codes_lib
from ccrec.models.codes import CompositionalEmbedding

# Threefry keys compile slowly on small CPUs; the tests only need some randomness.
_key = functools.partial(jax.random.key, impl="rbg")

V, M, K, D = 11, 3, 5, 7


def _model(k=K):
  return CompositionalEmbedding(V, M, k, D)


_init = jax.jit(lambda key: _model().init(key, jnp.zeros((1,), jnp.int32)))


@functools.cache
def _jitted(method):
  return jax.jit(lambda v, *a: _model().apply(v, *a, method=method))


def _apply(variables, *args, method):
  return _jitted(method)(variables, *args)


@pytest.fixture(scope="module")
def variables():
  return _init(_key(0))


def test_variables_layout_and_dtypes(variables):
  assert set(variables) == {"params", "codes"}
  assert variables["params"]["codebooks"].shape == (M, K, D)
  assert list(variables["params"]) == ["codebooks"]
  codes = np.asarray(variables["codes"]["codes"])
  assert codes.shape == (V + 1, M) and codes.dtype == np.uint8
  assert (codes[0] == 0).all() and codes.max() < K and len(np.unique(codes[1:])) > 1
  wide = jax.eval_shape(_model(300).init, _key(0), jnp.zeros((1,), jnp.int32))
  assert wide["codes"]["codes"].dtype == jnp.uint16
  assert codes_lib.code_dtype(256) == np.uint8 and codes_lib.code_dtype(257) == np.uint16


def test_init_is_deterministic(variables):
  again = _init(_key(0))
  np.testing.assert_array_equal(
      np.asarray(again["codes"]["codes"]), np.asarray(variables["codes"]["codes"])
  )


def test_lookup_is_sum_of_gathered_codewords_and_padding_is_zero(variables):
  ids = jnp.array([[3, 0, 11], [1, 1, 5]])
  emb = np.asarray(_apply(variables, ids, method="lookup"))
  books = np.asarray(variables["params"]["codebooks"])
  codes = np.asarray(variables["codes"]["codes"]).astype(int)
  for i, row in enumerate(np.asarray(ids)):
    for j, v in enumerate(row):
      expected = sum(books[m, codes[v, m]] for m in range(M)) if v else np.zeros(D)
      np.testing.assert_allclose(emb[i, j], expected, rtol=1e-6, atol=1e-7)
  table = np.asarray(_apply(variables, method="table"))
  assert table.shape == (V + 1, D) and (table[0] == 0).all()
  np.testing.assert_allclose(table[np.asarray(ids)], emb, rtol=1e-6)


def test_score_via_code_tables_matches_table_product(variables):
  s = jnp.asarray(np.random.default_rng(1).normal(size=(2, D)), jnp.float32)
  table = _apply(variables, method="table")
  scores = np.asarray(_apply(variables, s, method="score"))
  assert scores.shape == (2, V + 1) and np.isneginf(scores[:, 0]).all()
  np.testing.assert_allclose(scores[:, 1:], np.asarray(s @ table.T)[:, 1:], rtol=1e-5, atol=1e-6)
  ids = jnp.array([4, 0, 9, 4])
  some = np.asarray(_apply(variables, s, ids, method="score"))
  np.testing.assert_allclose(some, np.asarray(s @ table[ids].T), rtol=1e-5, atol=1e-6)
  assert (some[:, 1] == 0).all()


def test_score_never_builds_the_table(variables):
  s = jnp.ones((2, D))
  jaxpr = jax.make_jaxpr(lambda v: _model().apply(v, s, method="score"))(variables)

  def shapes(jx):
    for eqn in jx.eqns:
      for var in eqn.outvars:
        yield tuple(getattr(var.aval, "shape", ()))
      for param in eqn.params.values():
        sub = getattr(param, "jaxpr", param)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          yield from shapes(sub)

  offending = [sh for sh in shapes(jaxpr.jaxpr) if V + 1 in sh and D in sh]
  assert not offending, offending
  table_jaxpr = jax.make_jaxpr(lambda v: _model().apply(v, method="table"))(variables)
  assert any(V + 1 in sh and D in sh for sh in shapes(table_jaxpr.jaxpr))  # the check can fail


def test_codes_are_not_trainable(variables):
  # Through the project's TrainState: the codes travel as a constant collection, the
  # optimizer sees only the codebooks, and steps leave the integer codes bit-identical.
  from ccrec.train.state import TrainState

  ids = jnp.array([1, 2, 3])
  state = TrainState.create(variables, optax.adam(0.1))
  assert set(state.params) == {"codebooks"} and set(state.consts) == {"codes"}
  codes_before = np.array(variables["codes"]["codes"])

  @jax.jit
  def step(state):
    def loss(params):
      return jnp.sum(_model().apply(state.variables(params), ids) ** 2)

    return state.apply_gradients(jax.grad(loss)(state.params))

  for _ in range(3):
    state = step(state)
  got = np.asarray(state.consts["codes"]["codes"])
  np.testing.assert_array_equal(got, codes_before)
  assert got.dtype == codes_before.dtype == np.uint8
  assert not np.allclose(
      np.asarray(state.params["codebooks"]), np.asarray(variables["params"]["codebooks"])
  )


def test_set_codes_replaces_codes_and_codebooks(variables):
  rng = np.random.default_rng(2)
  new_codes = rng.integers(0, K, size=(V + 1, M)).astype(np.int64)
  new_codes[0] = 0
  books = rng.normal(size=(M, K, D)).astype(np.float32)
  nested = {"params": {"items": variables["params"]}, "codes": {"items": variables["codes"]}}
  out = codes_lib.set_codes(nested, new_codes, books)
  assert out["codes"]["items"]["codes"].dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(out["codes"]["items"]["codes"]), new_codes)
  np.testing.assert_array_equal(np.asarray(out["params"]["items"]["codebooks"]), books)
  # The input is untouched; the new variables drive lookup.
  assert not np.array_equal(np.asarray(nested["codes"]["items"]["codes"]), new_codes)
  flat = {"params": out["params"]["items"], "codes": out["codes"]["items"]}
  emb = np.asarray(_apply(flat, jnp.array([5]), method="lookup"))[0]
  np.testing.assert_allclose(emb, books[np.arange(M), new_codes[5]].sum(0), rtol=1e-6)
  with pytest.raises(ValueError, match="shape"):
    codes_lib.set_codes(nested, new_codes[:-1])


def test_compression_stats_match_the_paper():
  tmall = codes_lib.compression_stats(40728, 4, 32, 128)
  assert round(tmall["paper_ratio"]) == 29
  rr = codes_lib.compression_stats(36968, 3, 256, 256)
  assert round(rr["paper_ratio"]) == 31
  assert tmall["codes_bytes"] == 40729 * 4 and tmall["codebook_bytes"] == 4 * 32 * 128 * 4
  assert tmall["table_bytes"] == 40729 * 128 * 4
  np.testing.assert_allclose(tmall["bytes_ratio"], 40729 * 512 / (40729 * 4 + 65536))
  wide = codes_lib.compression_stats(10, 2, 1000, 8)
  assert wide["codes_bytes"] == 11 * 2 * 2
