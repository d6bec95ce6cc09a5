"""Tests for ccrec.models.tt (tensor-train item embeddings)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.models import tt
from ccrec.models.tt import TTEmbedding

# Threefry keys compile slowly on small CPUs; the tests only need some randomness.
_key = functools.partial(jax.random.key, impl="rbg")

V, D = 9, 6  # 10 rows in a (4, 4) grid: first digit 3 never used
MODEL = TTEmbedding(num_items=V, features=D, rank=3, item_factors=(4, 4), d_factors=(3, 2))


@functools.cache
def _jitted(method):
  return jax.jit(lambda v, *a: MODEL.apply(v, *a, method=method))


@pytest.fixture(scope="module")
def variables():
  return jax.jit(lambda k: MODEL.init(k, jnp.zeros((1,), jnp.int32)))(_key(0))


def test_factorisation_helpers():
  assert tt.auto_item_factors(1683) == (12, 12, 12)
  assert tt.auto_item_factors(1000) == (10, 10, 10)
  for rows in (2, 7, 1001, 40729, 1_000_001):
    for k in (2, 3, 4):
      factors = tt.auto_item_factors(rows, k)
      assert len(factors) == k and math.prod(factors) >= rows
      assert max(factors) - min(factors) <= max(2, max(factors) // 4)
  assert tt.factorize_exact(128, 3) == (8, 4, 4)
  assert tt.factorize_exact(256, 3) == (8, 8, 4)
  assert tt.factorize_exact(64, 3) == (4, 4, 4)
  assert tt.factorize_exact(7, 3) == (7, 1, 1)


def test_core_shapes_and_parameter_count(variables):
  shapes = [variables["params"][f"core_{k}"].shape for k in range(2)]
  assert shapes == [(1, 4, 3, 3), (3, 4, 2, 1)]
  count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert count == tt.tt_num_params((4, 4), (3, 2), 3) == 1 * 4 * 3 * 3 + 3 * 4 * 2 * 1
  # Hand count for (12, 12, 12) x (8, 4, 4), rank 8.
  assert tt.tt_num_params((12, 12, 12), (8, 4, 4), 8) == 768 + 3072 + 384
  assert tt.tt_num_params((12, 12, 12), (8, 4, 4), (2, 5)) == 12 * 8 * 2 + 2 * 12 * 4 * 5 + 5 * 48
  stats = tt.tt_bytes(1682, 64, 8)
  assert stats["num_params"] == tt.tt_num_params((12, 12, 12), (4, 4, 4), 8)
  assert stats["compressed_bytes"] == 4 * stats["num_params"]
  assert stats["bytes_ratio"] == pytest.approx(1683 * 64 * 4 / stats["compressed_bytes"])


def test_lookup_matches_full_tensor_train_contraction(variables):
  g0 = np.asarray(variables["params"]["core_0"])  # [1, 4, 3, 3]
  g1 = np.asarray(variables["params"]["core_1"])  # [3, 4, 2, 1]
  full = np.einsum("aibr,rjcs->ijbc", g0, g1).reshape(16, 6)  # row = 4 i + j, col = 2 b + c
  table = np.asarray(_jitted("table")(variables))
  assert table.shape == (V + 1, D)
  np.testing.assert_array_equal(table[0], 0.0)
  np.testing.assert_allclose(table[1:], full[1 : V + 1], rtol=1e-5, atol=1e-7)
  ids = jnp.array([[2, 0], [9, 9]])
  emb = np.asarray(_jitted("lookup")(variables, ids))
  assert emb.shape == (2, 2, D)
  np.testing.assert_allclose(emb, table[np.asarray(ids)], rtol=1e-6)


def test_score_matches_table_product(variables):
  s = jnp.asarray(np.random.default_rng(1).normal(size=(3, D)), jnp.float32)
  table = _jitted("table")(variables)
  scores = np.asarray(_jitted("score")(variables, s))
  assert scores.shape == (3, V + 1) and np.isneginf(scores[:, 0]).all()
  np.testing.assert_allclose(scores[:, 1:], np.asarray(s @ table.T)[:, 1:], rtol=1e-5, atol=1e-6)
  ids = jnp.array([5, 0, 1])
  some = np.asarray(_jitted("score")(variables, s, ids))
  np.testing.assert_allclose(some, np.asarray(s @ table[ids].T), rtol=1e-5, atol=1e-6)


def test_rows_beyond_the_catalog_are_never_used(variables):
  s = jnp.ones((2, D))

  def loss(params):
    v = {"params": params}
    scores = MODEL.apply(v, s, method="score")[:, 1:]
    return jnp.sum(MODEL.apply(v, method="table") ** 2) + jnp.sum(scores)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  # Rows 0..9 have first digit 0, 1 or 2: slice 3 of core_0 feeds only rows 12..15.
  assert float(jnp.abs(grads["core_0"][:, 3]).max()) == 0.0
  assert float(jnp.abs(grads["core_0"][:, :3]).max()) > 0.0


def test_default_factorisation_and_init_scale():
  model = TTEmbedding(num_items=1682, features=64, rank=8)
  assert model.factors() == ((12, 12, 12), (4, 4, 4))
  v = jax.jit(lambda k: model.init(k, jnp.zeros((1,), jnp.int32)))(_key(1))
  table = jax.jit(lambda v: model.apply(v, method="table"))(v)
  assert table.shape == (1683, 64)
  assert 0.02 < float(jnp.std(table[1:])) < 0.1  # embedding_std = 0.05
  with pytest.raises(ValueError, match="cover"):
    TTEmbedding(num_items=20, features=4, item_factors=(4, 4)).factors()
  with pytest.raises(ValueError, match="multiply"):
    TTEmbedding(num_items=10, features=6, item_factors=(4, 4), d_factors=(2, 2)).factors()
