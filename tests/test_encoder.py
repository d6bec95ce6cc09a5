"""SessionEncoder: shapes, causality, padding invariance, init choices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.models.encoder import SessionEncoder
from ccrec.models.initializers import make_initializer


def _encoder(**kw):
  args = dict(
      features=16,
      num_blocks=2,
      num_heads=2,
      inner=32,
      dropout=0.3,
      attn_dropout=0.3,
      max_len=6,
      kernel_init=make_initializer("truncated_normal", 0.02),
  )
  args.update(kw)
  return SessionEncoder(**args)


def _inputs():
  x = jax.random.normal(jax.random.key(1), (3, 6, 16))
  mask = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], bool)
  return x, mask


def test_shape_and_zero_padding():
  enc = _encoder()
  x, mask = _inputs()
  params = enc.init(jax.random.key(0), x, mask)
  h = enc.apply(params, x, mask)
  assert h.shape == (3, 6, 16)
  np.testing.assert_array_equal(np.asarray(h)[~np.asarray(mask)], 0.0)


def test_causal_future_items_do_not_change_earlier_states():
  enc = _encoder()
  x, mask = _inputs()
  params = enc.init(jax.random.key(0), x, mask)
  h = enc.apply(params, x, mask)
  x2 = x.at[1, 4:].set(jax.random.normal(jax.random.key(7), (2, 16)))
  h2 = enc.apply(params, x2, mask)
  np.testing.assert_allclose(h[1, :4], h2[1, :4], atol=1e-6)
  assert not np.allclose(h[1, 4:], h2[1, 4:])


def test_padding_content_is_ignored():
  enc = _encoder()
  x, mask = _inputs()
  params = enc.init(jax.random.key(0), x, mask)
  h = enc.apply(params, x, mask)
  junk = x.at[0, 4:].set(100.0)
  np.testing.assert_allclose(enc.apply(params, junk, mask)[0], h[0], atol=1e-6)


def test_dropout_only_when_not_deterministic():
  enc = _encoder()
  x, mask = _inputs()
  params = enc.init(jax.random.key(0), x, mask)
  a = enc.apply(params, x, mask, deterministic=True)
  b = enc.apply(params, x, mask, deterministic=False, rngs={"dropout": jax.random.key(3)})
  c = enc.apply(params, x, mask, deterministic=False, rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(b, c)


def test_uniform_init_is_bounded_and_bad_names_fail():
  w = make_initializer("uniform", 0.1)(jax.random.key(0), (1000,))
  assert float(jnp.abs(w).max()) <= 0.1 and float(jnp.abs(w).max()) > 0.09
  with pytest.raises(ValueError, match="model.init"):
    make_initializer("xavier", 0.1)


def test_too_long_and_indivisible_heads_fail():
  enc = _encoder(max_len=4)
  x, mask = _inputs()
  with pytest.raises(ValueError, match="max_len"):
    enc.init(jax.random.key(0), x, mask)
  with pytest.raises(ValueError, match="num_heads"):
    _encoder(num_heads=3).init(jax.random.key(0), x, mask)
