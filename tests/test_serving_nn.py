"""ccrec.serving.nn, the numpy building blocks of the on-device runtime, against hand values
and the Flax modules they mirror (the whole model: test_serving_runtime.py)."""

import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ccrec.models.gru import GRUEncoder
from ccrec.models.initializers import make_initializer
from ccrec.models.readout import NARMReadout, SoftAttentionReadout
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.serving import nn as np_nn


def test_layer_norm_hand_values_and_flax():
  x = np.array([[1.0, 3.0], [-2.0, -2.0]], np.float32)
  scale, bias = np.array([2.0, 3.0], np.float32), np.array([1.0, -1.0], np.float32)
  out = np_nn.layer_norm(x, scale, bias, 1e-12)
  # [1, 3]: mean 2, variance 1 -> [-1, 1]; a constant row normalises to 0 -> the bias.
  np.testing.assert_allclose(out, [[-1.0, 2.0], [1.0, -1.0]], atol=1e-6)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 8)).astype(np.float32) * 4 + 1
  scale = rng.normal(size=8).astype(np.float32)
  bias = rng.normal(size=8).astype(np.float32)
  flax_out = nn.LayerNorm(epsilon=1e-5).apply({"params": {"scale": scale, "bias": bias}}, x)
  np.testing.assert_allclose(np_nn.layer_norm(x, scale, bias, 1e-5), flax_out, atol=1e-5)


def test_softmax_is_stable_and_masks_the_mask_value():
  x = np.array([[1000.0, 1000.0, -1e9], [0.0, np.log(3.0), -1e9]], np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no overflow
    p = np_nn.softmax(x.copy())
  np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]], atol=1e-6)
  x = np.random.default_rng(1).normal(size=(4, 7)).astype(np.float32)
  np.testing.assert_allclose(np_nn.softmax(x.copy(), axis=0), jax.nn.softmax(x, axis=0), atol=1e-6)


def test_sigmoid_saturates_without_warnings():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    s = np_nn._sigmoid(np.array([-1000.0, 0.0, 1000.0], np.float32))
  np.testing.assert_array_equal(s, [0.0, 0.5, 1.0])


def _flat(params) -> dict:
  return {
      k: np.asarray(v)
      for k, v in traverse_util.flatten_dict(jax.device_get(params), sep="/").items()
  }


def test_soft_attention_readout_equals_flax():
  init = make_initializer("truncated_normal", 0.5)
  module = SoftAttentionReadout(8, init)
  rng = np.random.default_rng(2)
  h = rng.normal(size=(3, 5, 8)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [0, 0, 0, 0, 0]], bool)  # gaps, empty
  params = module.init(jax.random.key(0), jnp.asarray(h), jnp.asarray(mask))["params"]
  want = module.apply({"params": params}, jnp.asarray(h), jnp.asarray(mask))
  flat = {f"readout/{k}": v for k, v in _flat(params).items()}
  got = np_nn.readout(flat, {"readout": "soft_attention"}, h, mask)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_array_equal(got[2], 0.0)  # nothing allowed reads zeros


def _encoder_setup(max_len=6):
  spec = ModelSpec(
      num_items=20,
      d=8,
      num_blocks=2,
      num_heads=2,
      inner=16,
      dropout=0.0,
      attn_dropout=0.0,
      max_len=max_len,
      readout="last",
  )
  model = SessionRecommender(spec)
  variables = init_variables(model, jax.random.key(3))
  config = {"max_len": max_len, "num_heads": 2, "num_blocks": 2, "layer_norm_eps": 1e-12}
  return model, variables, _flat(variables["params"]), config


def test_encode_of_a_shorter_batch_is_the_padded_batch_cut():
  """The runtime encodes only as many positions as the batch's longest session needs."""
  _, _, params, config = _encoder_setup()
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 6, 8)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], bool)
  full = np_nn.encode(params, config, x * mask[..., None], mask)
  short = np_nn.encode(params, config, (x * mask[..., None])[:, :3], mask[:, :3])
  np.testing.assert_allclose(short, full[:, :3], atol=1e-6)
  np.testing.assert_array_equal(full[~mask], 0.0)  # padding positions are zero
  with pytest.raises(ValueError, match="exceeds max_len=6"):
    np_nn.encode(params, config, np.zeros((1, 7, 8), np.float32), np.ones((1, 7), bool))


def test_encode_equals_the_flax_encoder():
  model, variables, params, config = _encoder_setup()
  items = np.array([[3, 7, 1, 0, 0, 0], [5, 5, 9, 11, 2, 0]], np.int32)
  mask = items > 0
  out = model.apply(variables, jnp.asarray(items))
  table = params["items/embedding"]
  h = np_nn.encode(params, config, table[items] * mask[..., None], mask)
  np.testing.assert_allclose(h, out["hidden"], atol=1e-4)
  s = np_nn.readout(params, {"readout": "last"}, h, mask)
  np.testing.assert_allclose(s, out["session"], atol=1e-4)


# ---------------------------------------------------------------------------- GRU encoder


@pytest.mark.parametrize("layers", [1, 2])
def test_gru_encoder_equals_flax(layers):
  """The numpy GRU (Flax's GRUCell, position by position) and projection, on random weights
  larger than the init's, with padding after each session and one empty session."""
  module = GRUEncoder(
      features=8, hidden=12, num_layers=layers, dropout=0.0, kernel_init=nn.initializers.normal(1)
  )
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, 7, 8)).astype(np.float32)
  mask = np.array([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0], [0] * 7], bool)
  x = x * mask[..., None]  # padding embeddings are zero, as the item look-up gives
  params = module.init(jax.random.key(layers), jnp.asarray(x), jnp.asarray(mask))["params"]
  # Biases are initialised to zero: random ones, so every bias term is checked.
  params = jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(np.float32) * 0.5, params)
  want = np.asarray(module.apply({"params": params}, jnp.asarray(x), jnp.asarray(mask)))
  flat = {f"encoder/{k}": v for k, v in _flat(params).items()}
  assert {k for k in flat if k.startswith("encoder/gru_0/")} == {
      f"encoder/gru_0/{g}/{w}"
      for g, w in [(g, "kernel") for g in ("ir", "iz", "in", "hr", "hz", "hn")]
      + [(g, "bias") for g in ("ir", "iz", "in", "hn")]
  }
  config = {"encoder": "gru4rec", "gru_hidden": 12, "gru_layers": layers, "max_len": 7}
  got = np_nn.encode(flat, config, x, mask)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[~mask], 0.0)
  assert np.abs(want[mask]).min() > 1e-3  # the states are not trivially small
  # A shorter batch (the runtime cuts to the longest session) is the padded batch cut.
  short = np_nn.encode(flat, config, x[1:3, :3], mask[1:3, :3])
  np.testing.assert_allclose(short, got[1:3, :3], rtol=1e-6, atol=1e-7)


def test_encode_names_an_unknown_encoder():
  with pytest.raises(ValueError, match="unknown encoder 'lstm'"):
    np_nn.encode(
        {},
        {"encoder": "lstm", "max_len": 3},
        np.zeros((1, 2, 4), np.float32),
        np.ones((1, 2), bool),
    )


# ---------------------------------------------------------------------------- NARM readout


def test_narm_readout_hand_computation():
  """NARM's readout on d = 2 against the formula written out element by element."""
  rng = np.random.default_rng(7)
  d = 2
  params = {
      "readout/a1/kernel": rng.normal(size=(d, d)).astype(np.float32),
      "readout/a2/kernel": rng.normal(size=(d, d)).astype(np.float32),
      "readout/v/kernel": rng.normal(size=(d, 1)).astype(np.float32),
      "readout/b/kernel": rng.normal(size=(2 * d, d)).astype(np.float32),
  }
  h = rng.normal(size=(3, 4, d)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0]], bool)  # padding, a gap, empty
  a1, a2 = params["readout/a1/kernel"], params["readout/a2/kernel"]
  v, b = params["readout/v/kernel"][:, 0], params["readout/b/kernel"]
  sig = lambda z: 1.0 / (1.0 + math.exp(-z))
  want = np.zeros((3, d))
  for row in range(3):
    valid = [j for j in range(4) if mask[row, j]]
    q = h[row, valid[-1]].astype(np.float64) if valid else np.zeros(d)
    c = np.zeros(d)
    for j in valid:
      alpha = sum(
          v[k]
          * sig(
              sum(q[i] * a1[i, k] for i in range(d))
              + sum(h[row, j, i] * a2[i, k] for i in range(d))
          )
          for k in range(d)
      )
      c += alpha * h[row, j]
    both = np.concatenate([c, q])
    want[row] = [sum(both[i] * b[i, k] for i in range(2 * d)) for k in range(d)]
  got = np_nn.readout(params, {"readout": "narm"}, h, mask)
  assert got.dtype == np.float32 and got.shape == (3, d)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[2], 0.0)  # nothing allowed: q = 0, c = 0
  # The attention is not normalised: doubling v doubles the local part c (q's part stays).
  doubled = dict(params, **{"readout/v/kernel": 2 * params["readout/v/kernel"]})
  c_part = got - np_nn.last_state(h, mask) @ b[d:]
  np.testing.assert_allclose(
      np_nn.readout(doubled, {"readout": "narm"}, h, mask),
      got + c_part,
      rtol=1e-5,
      atol=1e-6,
  )


def test_readout_names_an_unknown_readout():
  with pytest.raises(ValueError, match="unknown readout 'mean'"):
    np_nn.readout({}, {"readout": "mean"}, np.zeros((1, 2, 4), np.float32), np.ones((1, 2), bool))


def test_narm_readout_equals_flax():
  """The numpy NARM readout and Flax's NARMReadout on the same weights, with padding, gaps
  in the mask (the runtime's masks have none; the formula is the same) and an empty row."""
  module = NARMReadout(8, nn.initializers.normal(0.7))
  rng = np.random.default_rng(6)
  h = rng.normal(size=(4, 7, 8)).astype(np.float32)
  mask = np.array([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0], [0] * 7], bool)
  params = module.init(jax.random.key(0), jnp.asarray(h), jnp.asarray(mask))["params"]
  want = np.asarray(module.apply({"params": params}, jnp.asarray(h), jnp.asarray(mask)))
  flat = {f"readout/{k}": v for k, v in _flat(params).items()}
  got = np_nn.readout(flat, {"readout": "narm"}, h, mask)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.abs(want[:3]).min() > 1e-4 and not np.any(want[3])
