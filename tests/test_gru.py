"""The GRU4Rec encoder (model.encoder='gru4rec'): causal states, padding, views, training."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec import config as config_lib
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.models.views import DistillHeads, init_heads
from ccrec.serving import export, graph

SPEC = ModelSpec(
    num_items=40,
    d=8,
    encoder="gru4rec",
    gru_hidden=12,
    gru_layers=2,
    readout="last",
    max_len=7,
    dropout=0.3,
)


@pytest.fixture(scope="module")
def model():
  m = SessionRecommender(SPEC)
  v = init_variables(m, jax.random.PRNGKey(0))
  # Larger input kernels than the 0.02 init, so that states differ visibly between sessions.
  v = jax.tree.map(lambda a: a * 50.0, v)
  return m, v


def test_the_session_vector_is_the_projected_gru_state_at_the_last_click(model):
  m, v = model
  items = jnp.array([[5, 9, 2, 0, 0, 0, 0]])
  out = m.apply(v, items)
  p = v["params"]["encoder"]
  x = m.apply(v, items, method=lambda mod, i: mod.items.lookup(i))[0]
  h = [np.zeros(12, np.float32) for _ in range(2)]
  sig = lambda z: 1 / (1 + np.exp(-z))
  for t in range(3):  # Flax's GRUCell: r, z gates; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    inp = np.asarray(x[t])
    for layer in range(2):
      c = p[f"gru_{layer}"]
      dense = lambda name, a, bias=True, c=c: a @ np.asarray(c[name]["kernel"]) + (
          np.asarray(c[name]["bias"]) if bias else 0
      )
      r = sig(dense("ir", inp) + dense("hr", h[layer], False))
      z = sig(dense("iz", inp) + dense("hz", h[layer], False))
      n = np.tanh(dense("in", inp) + r * dense("hn", h[layer]))
      h[layer] = (1 - z) * n + z * h[layer]
      inp = h[layer]
  want = inp @ np.asarray(p["project"]["kernel"]) + np.asarray(p["project"]["bias"])
  np.testing.assert_allclose(out["session"][0], want, rtol=1e-4, atol=1e-5)


def test_padding_and_later_clicks_change_no_earlier_state(model):
  m, v = model
  a = m.apply(v, jnp.array([[5, 9, 2, 0, 0, 0, 0]]), all_positions=True)
  b = m.apply(v, jnp.array([[5, 9, 2, 7, 3, 0, 0]]), all_positions=True)
  np.testing.assert_allclose(a["positions"][0, :3], b["positions"][0, :3], atol=1e-6)
  assert not np.allclose(a["session"], b["session"], atol=1e-4)  # the readout moved on
  np.testing.assert_array_equal(a["hidden"][0, 3:], 0.0)  # padding states are zero


def test_the_window_objective_reads_every_prefix(model):
  m, v = model
  items = jnp.array([[5, 9, 2, 7, 3, 11, 4]])
  positions = m.apply(v, items, all_positions=True)["positions"][0]
  for t in range(7):
    prefix = jnp.zeros_like(items).at[0, : t + 1].set(items[0, : t + 1])
    np.testing.assert_allclose(positions[t], m.apply(v, prefix)["session"][0], atol=1e-5)


def test_hot_and_cold_views_read_the_state_at_the_last_hot_and_cold_click(model):
  m, v = model
  items = jnp.array([[5, 9, 2, 7, 3, 0, 0]])
  out = m.apply(v, items)
  is_hot = jnp.array([[False, True, False, False, True, False, False]])
  heads = DistillHeads(SPEC.d, readout="last")
  hv = init_heads(heads, jax.random.PRNGKey(1), SPEC.max_len)
  hot, cold = heads.apply(
      hv, "teacher", out["hidden"], out["mask"], out["session"], is_hot, method="views"
  )
  np.testing.assert_allclose(hot[0], out["hidden"][0, 4], atol=1e-6)
  np.testing.assert_allclose(cold[0], out["hidden"][0, 3], atol=1e-6)


def test_dropout_is_on_the_item_embeddings_in_training_only(model):
  m, v = model
  items = jnp.array([[5, 9, 2, 7, 3, 0, 0]])
  key = {"dropout": jax.random.PRNGKey(3)}
  train = m.apply(v, items, deterministic=False, rngs=key)["session"]
  assert not np.allclose(train, m.apply(v, items)["session"])
  np.testing.assert_array_equal(train, m.apply(v, items, deterministic=False, rngs=key)["session"])


def test_the_config_validates_the_encoder():
  c = config_lib.base_config()
  c.model.encoder = "lstm"
  with pytest.raises(Exception, match="model.encoder"):
    config_lib.validate(c)


def test_serving_paths_name_an_encoder_they_do_not_serve(model):
  _, v = model
  assert export.bundle_config(SPEC, v)["encoder"] == "gru4rec"
  other = dataclasses.replace(SPEC, encoder="lstm")
  with pytest.raises(
      ValueError, match="numpy bundle serves the encoders.*not model.encoder='lstm'"
  ):
    export.bundle_config(other, v)
  with pytest.raises(ValueError, match="model file serves the encoders.*not model.encoder='lstm'"):
    graph.serving_fn(other, v, k=5)
