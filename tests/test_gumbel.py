"""Tests for ccrec.ops.gumbel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.ops import gumbel


def _logits():
  return jnp.asarray(np.random.default_rng(0).normal(size=(16, 4, 8)), jnp.float32)


def test_noise_shape_and_statistics():
  g = gumbel.gumbel_noise(jax.random.key(1), (400, 500))
  assert g.shape == (400, 500) and g.dtype == jnp.float32
  # Standard Gumbel: mean = Euler-Mascheroni constant, variance = pi^2 / 6.
  np.testing.assert_allclose(float(g.mean()), 0.5772, atol=0.01)
  np.testing.assert_allclose(float(g.var()), np.pi**2 / 6, rtol=0.02)


def test_soft_samples_sum_to_one_and_are_positive():
  y = gumbel.gumbel_softmax(jax.random.key(1), _logits(), 0.5)
  assert y.shape == (16, 4, 8)
  np.testing.assert_allclose(np.asarray(y.sum(-1)), 1.0, rtol=1e-5)
  assert bool(jnp.all(y >= 0))


def test_hard_samples_are_exact_one_hot_at_soft_argmax():
  key, logits = jax.random.key(2), _logits()
  hard = gumbel.gumbel_softmax(key, logits, 0.3, hard=True)
  soft = gumbel.gumbel_softmax(key, logits, 0.3, hard=False)
  values = np.asarray(hard)
  assert set(np.unique(values)) <= {0.0, 1.0}
  np.testing.assert_array_equal(values.sum(-1), 1.0)
  np.testing.assert_array_equal(values.argmax(-1), np.asarray(soft).argmax(-1))


def test_same_key_same_sample_different_key_different_sample():
  logits = _logits()
  a = gumbel.gumbel_softmax(jax.random.key(3), logits, 1.0)
  b = gumbel.gumbel_softmax(jax.random.key(3), logits, 1.0)
  c = gumbel.gumbel_softmax(jax.random.key(4), logits, 1.0)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))


def test_straight_through_gradient_equals_soft_gradient():
  key, logits = jax.random.key(5), _logits()
  weights = jnp.asarray(np.random.default_rng(6).normal(size=logits.shape), jnp.float32)

  def loss(lg, hard):
    return jnp.sum(weights * gumbel.gumbel_softmax(key, lg, 0.5, hard=hard))

  g_hard = jax.grad(loss)(logits, True)
  g_soft = jax.grad(loss)(logits, False)
  assert float(jnp.abs(g_hard).max()) > 0
  np.testing.assert_allclose(np.asarray(g_hard), np.asarray(g_soft), rtol=1e-6)
  # Forward-mode works too (custom JVP), and under jit.
  _, tangent = jax.jvp(jax.jit(lambda lg: loss(lg, True)), (logits,), (jnp.ones_like(logits),))
  _, tangent_soft = jax.jvp(lambda lg: loss(lg, False), (logits,), (jnp.ones_like(logits),))
  np.testing.assert_allclose(float(tangent), float(tangent_soft), rtol=1e-5, atol=1e-6)


def _many(row, n=4000):
  """n independent copies of one row of logits: [n, K] (one sample each)."""
  return jnp.broadcast_to(jnp.asarray(row, jnp.float32), (n, len(row)))


def test_lower_temperature_gives_sharper_soft_samples():
  logits = _many(np.log([0.6, 0.3, 0.1]))
  sharpness = [float(gumbel.gumbel_softmax(jax.random.key(7), logits, tau).max(-1).mean())
               for tau in (1.0, 0.3, 0.1, 0.01)]
  assert sharpness == sorted(sharpness)
  assert sharpness[-1] > 0.98


def test_sample_frequencies_follow_softmax_of_logits():
  # Gumbel-max: argmax of the sample is distributed as softmax(logits).
  probs = np.array([0.6, 0.3, 0.1])
  hard = gumbel.gumbel_softmax(jax.random.key(8), _many(np.log(probs)), 0.3, hard=True)
  np.testing.assert_allclose(np.asarray(hard.mean(0)), probs, atol=0.025)


def test_peaked_logits_at_low_temperature_pick_the_argmax():
  logits = _many([0.0, 4.0, -2.0])
  hard = gumbel.gumbel_softmax(jax.random.key(9), logits, 0.1, hard=True)
  frequency = float(hard[:, 1].mean())
  expected = float(jax.nn.softmax(logits[0])[1])
  assert frequency > 0.9 and abs(frequency - expected) < 0.02


def test_negative_infinity_logits_are_never_sampled():
  hard = gumbel.gumbel_softmax(jax.random.key(10), _many([0.0, -np.inf, 0.0]), 0.3, hard=True)
  assert float(hard[:, 1].sum()) == 0.0
  assert not bool(jnp.any(jnp.isnan(hard)))
