"""SessionRecommender: RecBole-equal parameter count, scoring, prefix equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables


def test_parameter_count_equals_recbole_sasrec():
  # RecBole 1.2.1 SASRec on ml-100k (d=64, 2 blocks, 2 heads, inner 256, max_len 50): 211,008.
  model = SessionRecommender(ModelSpec(num_items=1682, readout="last"))
  params = init_variables(model, jax.random.key(0))["params"]
  assert sum(int(x.size) for x in jax.tree.leaves(params)) == 211_008


def test_scores_exclude_padding_and_match_table():
  model = SessionRecommender(ModelSpec(num_items=30, d=8, num_blocks=1, inner=16, max_len=5))
  v = init_variables(model, jax.random.key(0))
  items = jnp.array([[3, 4, 0, 0, 0], [7, 8, 9, 1, 2]])
  s = model.apply(v, items)["session"]
  scores = model.apply(v, s, method="score")
  assert scores.shape == (2, 31) and bool(jnp.all(scores[:, 0] == -jnp.inf))
  table = model.apply(v, method="table")
  np.testing.assert_allclose(scores[:, 1:], (s @ table.T)[:, 1:], rtol=1e-5, atol=1e-6)
  ids = jnp.array([5, 1, 30])
  np.testing.assert_allclose(
      model.apply(v, s, ids, method="score"), scores[:, ids], rtol=1e-5, atol=1e-6
  )


@pytest.mark.slow
def test_all_positions_equal_prefix_sessions():
  model = SessionRecommender(ModelSpec(num_items=30, d=8, num_blocks=2, inner=16, max_len=6))
  v = init_variables(model, jax.random.key(0))
  items = jnp.array([[3, 4, 5, 6, 0, 0]])
  positions = model.apply(v, items, all_positions=True)["positions"]
  for t in range(4):
    prefix = items.at[0, t + 1 :].set(0)
    np.testing.assert_allclose(
        positions[0, t], model.apply(v, prefix)["session"][0], rtol=2e-5, atol=2e-6
    )


def test_table_override_replaces_embeddings():
  model = SessionRecommender(ModelSpec(num_items=10, d=8, num_blocks=1, inner=16, max_len=4))
  v = init_variables(model, jax.random.key(0))
  items = jnp.array([[1, 2, 0, 0]])
  own = model.apply(v, method="table")
  np.testing.assert_allclose(
      model.apply(v, items, table=own)["session"], model.apply(v, items)["session"], rtol=1e-6
  )
  other = own * 2.0
  assert not np.allclose(
      model.apply(v, items, table=other)["session"], model.apply(v, items)["session"]
  )
