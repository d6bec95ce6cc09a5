"""Tests for ccrec.ops.losses: hand-computed values, invariances, -inf safety."""

import inspect

import jax
import numpy as np

from ccrec.ops import losses as _losses

NEG_INF = -np.inf


class _Jitted:
  """The module under test with every function jitted (eager op-by-op dispatch
  compiles each primitive separately, which is slow on small CPUs)."""

  def __getattr__(self, name):
    fn = getattr(_losses, name)
    static = [
        a
        for a in ("temperature", "symmetric", "label_smoothing")
        if a in inspect.signature(fn).parameters
    ]
    return jax.jit(fn, static_argnames=static)


losses = _Jitted()


def _rng(seed=0):
  return np.random.default_rng(seed)


def _grad(fn, **kwargs):
  return jax.jit(jax.grad(fn, **kwargs))


def _finite(tree):
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


# --- cross-entropy ------------------------------------------------------------------


def test_cross_entropy_hand_computed_with_padding_column():
  logits = np.array([[NEG_INF, 1.0, 2.0, 3.0], [NEG_INF, 0.0, 0.0, 0.0]])
  targets = np.array([3, 1])
  expected = [np.log(1 + np.exp(-1) + np.exp(-2)), np.log(3.0)]
  total, count = losses.softmax_cross_entropy_sums(logits, targets, np.array([1.0, 1.0]))
  np.testing.assert_allclose(float(total), sum(expected), rtol=1e-6)
  assert float(count) == 2.0
  np.testing.assert_allclose(
      float(losses.softmax_cross_entropy(logits, targets)), np.mean(expected), rtol=1e-6
  )
  weighted = losses.softmax_cross_entropy(logits, targets, np.array([3.0, 1.0]))
  np.testing.assert_allclose(float(weighted), (3 * expected[0] + expected[1]) / 4, rtol=1e-6)


def test_label_smoothing_hand_computed_with_padding_column():
  logits = np.array([[NEG_INF, 1.0, 2.0, 3.0], [NEG_INF, 0.5, -1.0, 2.0]])
  targets = np.array([3, 1])
  eps = 0.3
  log_p = logits[:, 1:] - np.log(np.exp(logits[:, 1:]).sum(1, keepdims=True))
  q = np.full((2, 3), eps / 3) + (1 - eps) * np.eye(3)[targets - 1]  # over items 1..3
  expected = -(q * log_p).sum(1)
  total, count = losses.softmax_cross_entropy_sums(logits, targets, np.ones(2), label_smoothing=eps)
  np.testing.assert_allclose(float(total), expected.sum(), rtol=1e-6)
  assert float(count) == 2.0
  np.testing.assert_allclose(
      float(losses.softmax_cross_entropy(logits, targets, label_smoothing=0.0)),
      float(losses.softmax_cross_entropy(logits, targets)),
      rtol=0,
  )
  # Gradient: softmax - q on the items, exactly 0 on the padding column, never NaN.
  smoothed = lambda x, t: _losses.softmax_cross_entropy(x, t, label_smoothing=eps)
  grad = np.asarray(_grad(smoothed)(logits, targets))
  assert _finite(grad) and float(np.abs(grad[:, 0]).sum()) == 0.0
  np.testing.assert_allclose(grad[:, 1:], (np.exp(log_p) - q) / 2, atol=1e-6)


def test_cross_entropy_zero_weight_padding_target_is_not_nan():
  logits = np.array([[NEG_INF, 1.0, 2.0], [NEG_INF, 1.0, 2.0]])
  targets = np.array([2, 0])  # row 1: filler row with padding target
  weights = np.array([1.0, 0.0])
  value = losses.softmax_cross_entropy(logits, targets, weights)
  np.testing.assert_allclose(float(value), np.log(1 + np.exp(-1)), rtol=1e-6)
  grad = _grad(losses.softmax_cross_entropy)(logits, targets, weights)
  assert _finite(grad)
  assert float(np.abs(grad[1]).sum()) == 0.0 and float(grad[0, 0]) == 0.0


def test_cross_entropy_all_zero_weights_is_zero():
  logits = np.zeros((2, 3))
  assert float(losses.softmax_cross_entropy(logits, np.array([1, 2]), np.zeros(2))) == 0.0


def test_cross_entropy_shift_invariance_and_window_shapes():
  logits = np.asarray(_rng().normal(size=(2, 3, 5)), np.float32)
  targets = np.array([[1, 2, 0], [4, 3, 1]])
  weights = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  base = losses.softmax_cross_entropy(logits, targets, weights)
  shifted = losses.softmax_cross_entropy(logits + 7.0, targets, weights)
  np.testing.assert_allclose(float(base), float(shifted), rtol=1e-5)
  flat = losses.softmax_cross_entropy(logits.reshape(6, 5), targets.reshape(6), weights.reshape(6))
  np.testing.assert_allclose(float(base), float(flat), rtol=1e-6)


# --- KL ---------------------------------------------------------------------------


def test_kl_hand_computed_and_padding_column_is_safe():
  t = np.log(np.array([[0.5, 0.5]]))
  s = np.log(np.array([[0.25, 0.75]]))
  expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
  np.testing.assert_allclose(float(losses.kl_soft_targets(t, s)), expected, rtol=1e-5)
  pad = np.full((1, 1), NEG_INF)
  t_pad, s_pad = np.concatenate([pad, t], 1), np.concatenate([pad, s], 1)
  np.testing.assert_allclose(float(losses.kl_soft_targets(t_pad, s_pad)), expected, rtol=1e-5)
  grads = _grad(losses.kl_soft_targets, argnums=(0, 1))(t_pad, s_pad)
  assert _finite(grads)
  assert float(np.abs(grads[1]).sum()) > 0 and float(np.abs(grads[0]).sum()) > 0


def test_kl_is_zero_for_equal_distributions_and_shift_invariant():
  t = np.asarray(_rng(1).normal(size=(4, 6)), np.float32)
  t[:, 0] = NEG_INF
  np.testing.assert_allclose(float(losses.kl_soft_targets(t, t + 3.0)), 0.0, atol=1e-6)


def test_kl_temperature_weights_and_nonnegativity():
  rng = _rng(2)
  t = np.asarray(rng.normal(size=(5, 7)), np.float32)
  s = np.asarray(rng.normal(size=(5, 7)), np.float32)
  np.testing.assert_allclose(
      float(losses.kl_soft_targets(t, s, temperature=2.0)),
      float(losses.kl_soft_targets(t / 2, s / 2)),
      rtol=1e-5,
  )
  per = np.asarray(losses.per_example_kl(t, s))
  assert bool(np.all(per >= 0))
  w = np.array([1.0, 0.0, 2.0, 0.0, 1.0])
  np.testing.assert_allclose(
      float(losses.kl_soft_targets(t, s, w)), float((per * w).sum() / 4), rtol=1e-5
  )
  total, count = losses.kl_soft_targets_sums(t, s, w)
  np.testing.assert_allclose(float(total), float((per * w).sum()), rtol=1e-5)
  assert float(count) == 4.0


def test_kl_teacher_zero_probability_contributes_nothing():
  # Teacher puts no mass on column 2 (student does): only the support counts.
  t = np.array([[0.0, 0.0, NEG_INF]])
  s = np.log(np.array([[0.25, 0.25, 0.5]]))
  np.testing.assert_allclose(float(losses.kl_soft_targets(t, s)), np.log(2.0), rtol=1e-5)
  assert _finite(_grad(losses.kl_soft_targets, argnums=(0, 1))(t, s))


# --- InfoNCE --------------------------------------------------------------------------


def test_info_nce_hand_computed():
  z = np.eye(2)
  expected = np.log(1 + np.exp(-2.0))  # cos = 1 vs 0 at T = 0.5
  np.testing.assert_allclose(float(losses.info_nce(z, z, temperature=0.5)), expected, rtol=1e-6)
  # Non-orthogonal: z1 = [[1,0],[1,1]], z2 = [[1,1],[0,1]] at T = 1.
  z1, z2 = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 1.0]])
  c = 1 / np.sqrt(2)
  row0 = -c + np.log(np.exp(c) + np.exp(0.0))
  row1 = -c + np.log(np.exp(1.0) + np.exp(c))
  np.testing.assert_allclose(
      float(losses.info_nce(z1, z2, temperature=1.0)), (row0 + row1) / 2, rtol=1e-6
  )
  sym = losses.info_nce(z1, z2, temperature=1.0, symmetric=True)
  np.testing.assert_allclose(
      float(sym),
      0.5
      * (
          float(losses.info_nce(z1, z2, temperature=1.0))
          + float(losses.info_nce(z2, z1, temperature=1.0))
      ),
      rtol=1e-6,
  )


def test_info_nce_invariances():
  rng = _rng(3)
  z1 = np.asarray(rng.normal(size=(6, 4)), np.float32)
  z2 = np.asarray(rng.normal(size=(6, 4)), np.float32)
  base = float(losses.info_nce(z1, z2))
  scale = np.asarray(rng.uniform(0.5, 3.0, size=(6, 1)), np.float32)
  np.testing.assert_allclose(float(losses.info_nce(z1 * scale, z2 / scale)), base, rtol=1e-5)
  perm = rng.permutation(6)
  np.testing.assert_allclose(float(losses.info_nce(z1[perm], z2[perm])), base, rtol=1e-5)
  # Perfectly aligned, well separated views give a lower loss than random ones.
  assert float(losses.info_nce(z1, z1)) < base


def test_info_nce_zero_weight_rows_are_excluded_everywhere():
  rng = _rng(4)
  z1 = np.asarray(rng.normal(size=(4, 3)), np.float32)
  z2 = np.asarray(rng.normal(size=(4, 3)), np.float32)
  base = float(losses.info_nce(z1, z2))
  junk = np.asarray(rng.normal(size=(2, 3)) * 100, np.float32)
  z1x = np.concatenate([z1, junk, np.zeros((1, 3))])
  z2x = np.concatenate([z2, junk[::-1], np.zeros((1, 3))])
  w = np.array([1.0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_allclose(float(losses.info_nce(z1x, z2x, w)), base, rtol=1e-5)
  grads = _grad(losses.info_nce, argnums=(0, 1))(z1x, z2x, w)
  assert _finite(grads)
  assert float(np.abs(grads[0][4:]).sum()) == 0.0 and float(np.abs(grads[1][4:]).sum()) == 0.0
  assert float(losses.info_nce(z1x, z2x, np.zeros(7))) == 0.0
  # A single valid row has only its positive: loss log(1) = 0.
  np.testing.assert_allclose(float(losses.info_nce(z1x, z2x, np.eye(7)[0])), 0.0, atol=1e-6)


# --- reconstruction ----------------------------------------------------------------------


def test_reconstruction_mse_hand_computed():
  pred = np.array([[1.0, 2.0], [0.0, 0.0]])
  target = np.array([[0.0, 0.0], [3.0, 4.0]])
  assert float(losses.reconstruction_mse(pred, target)) == 15.0
  assert float(losses.reconstruction_mse(pred, target, np.array([1.0, 0.0]))) == 5.0
  total, count = losses.reconstruction_mse_sums(pred, target, np.array([2.0, 1.0]))
  assert (float(total), float(count)) == (35.0, 3.0)
  assert float(losses.reconstruction_mse(pred, pred)) == 0.0
