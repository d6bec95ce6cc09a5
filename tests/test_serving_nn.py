"""ccrec.serving.nn, the numpy building blocks of the on-device runtime, against hand values
and the Flax modules they mirror (the whole encoder: test_serving_runtime.py)."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ccrec.models.initializers import make_initializer
from ccrec.models.readout import SoftAttentionReadout
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
