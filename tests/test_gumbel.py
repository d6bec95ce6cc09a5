"""Tests for ccrec.ops.gumbel.

Most tests use 'rbg' keys: threefry kernels compile slowly on small CPUs and
the properties tested do not depend on the generator. One test checks the
default (threefry) key.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ccrec.ops import gumbel

_key = functools.partial(jax.random.key, impl="rbg")
_sample = jax.jit(gumbel.gumbel_softmax, static_argnames="hard")


def _logits():
  return jnp.asarray(np.random.default_rng(0).normal(size=(16, 4, 8)), jnp.float32)


def _many(row, n=4000):
  """n independent copies of one row of logits: [n, K] (one sample each)."""
  return jnp.broadcast_to(jnp.asarray(row, jnp.float32), (n, len(row)))


def test_noise_statistics_with_the_default_key():
  g = jax.jit(gumbel.gumbel_noise, static_argnums=1)(jax.random.key(1), (400, 500))
  assert g.shape == (400, 500) and g.dtype == jnp.float32
  # Standard Gumbel: mean = Euler-Mascheroni constant, variance = pi^2 / 6.
  np.testing.assert_allclose(float(g.mean()), 0.5772, atol=0.01)
  np.testing.assert_allclose(float(g.var()), np.pi**2 / 6, rtol=0.02)


def test_soft_samples_sum_to_one_and_are_positive():
  y = _sample(_key(1), _logits(), 0.5)
  assert y.shape == (16, 4, 8)
  np.testing.assert_allclose(np.asarray(y.sum(-1)), 1.0, rtol=1e-5)
  assert bool(jnp.all(y >= 0))


def test_hard_samples_are_exact_one_hot_at_soft_argmax():
  key, logits = _key(2), _logits()
  hard = _sample(key, logits, 0.3, hard=True)
  soft = _sample(key, logits, 0.3)
  values = np.asarray(hard)
  assert set(np.unique(values)) <= {0.0, 1.0}
  np.testing.assert_array_equal(values.sum(-1), 1.0)
  np.testing.assert_array_equal(values.argmax(-1), np.asarray(soft).argmax(-1))


def test_same_key_same_sample_different_key_different_sample():
  logits = _logits()
  a = _sample(_key(3), logits, 1.0)
  b = _sample(_key(3), logits, 1.0)
  c = _sample(_key(4), logits, 1.0)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))


def test_straight_through_gradient_equals_soft_gradient():
  key, logits = _key(5), _logits()
  weights = jnp.asarray(np.random.default_rng(6).normal(size=logits.shape), jnp.float32)

  def loss(lg, hard):
    return jnp.sum(weights * gumbel.gumbel_softmax(key, lg, 0.5, hard=hard))

  @functools.partial(jax.jit, static_argnums=1)
  def grad_and_tangent(lg, hard):
    tangent = jax.jvp(lambda z: loss(z, hard), (lg,), (jnp.ones_like(lg),))[1]
    return jax.grad(loss)(lg, hard), tangent

  g_hard, t_hard = grad_and_tangent(logits, True)
  g_soft, t_soft = grad_and_tangent(logits, False)
  assert float(jnp.abs(g_hard).max()) > 0
  np.testing.assert_allclose(np.asarray(g_hard), np.asarray(g_soft), rtol=1e-6)
  # Forward mode (custom JVP) agrees too.
  np.testing.assert_allclose(float(t_hard), float(t_soft), rtol=1e-5, atol=1e-6)


def test_lower_temperature_gives_sharper_soft_samples():
  logits = _many(np.log([0.6, 0.3, 0.1]))
  sharpness = [float(_sample(_key(7), logits, tau).max(-1).mean()) for tau in (1.0, 0.3, 0.1, 0.01)]
  assert sharpness == sorted(sharpness)
  assert sharpness[-1] > 0.98


def test_sample_frequencies_follow_softmax_of_logits():
  # Gumbel-max: argmax of the sample is distributed as softmax(logits).
  probs = np.array([0.6, 0.3, 0.1])
  hard = _sample(_key(8), _many(np.log(probs)), 0.3, hard=True)
  np.testing.assert_allclose(np.asarray(hard.mean(0)), probs, atol=0.025)


def test_peaked_logits_at_low_temperature_pick_the_argmax():
  logits = _many([0.0, 4.0, -2.0])
  hard = _sample(_key(9), logits, 0.1, hard=True)
  frequency = float(hard[:, 1].mean())
  expected = float(jax.nn.softmax(logits[0])[1])
  assert frequency > 0.9 and abs(frequency - expected) < 0.02


def test_negative_infinity_logits_are_never_sampled():
  hard = _sample(_key(10), _many([0.0, -np.inf, 0.0]), 0.3, hard=True)
  assert float(hard[:, 1].sum()) == 0.0
  assert not bool(jnp.any(jnp.isnan(hard)))
