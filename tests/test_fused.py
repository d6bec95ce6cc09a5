"""ccrec.ops.fused: the chunked, closed-form losses equal the reference losses on logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.models.embeddings import mask_padding_column
from ccrec.ops import fused, losses

N, V, D = 23, 12, 5  # 23 rows: not a multiple of the chunk sizes below


def _inputs(seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  s1 = jax.random.normal(k[0], (N, D))
  s2 = jax.random.normal(k[1], (N, D))
  table = jax.random.normal(k[2], (V, D))
  targets = jax.random.randint(k[3], (N,), 1, V)
  # Zero-weight rows (with the padding id 0 as target, as window filler has), a weight 2.
  weights = jnp.ones(N).at[::4].set(0.0).at[5].set(2.0)
  targets = jnp.where(weights > 0, targets, 0)
  return s1, s2, table, targets, weights


def _close(a, b, tol=2e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("chunk", [1, 8, N, 64])
def test_cross_entropy_equals_the_reference_in_value_and_gradient(eps, chunk):
  s, _, table, t, w = _inputs()

  def ref(s, table):
    return losses.softmax_cross_entropy_sums(mask_padding_column(s @ table.T), t, w, eps)[0]

  def new(s, table):
    return fused.cross_entropy_sums(s, table, t, w, eps, chunk)

  want, want_g = jax.value_and_grad(ref, (0, 1))(s, table)
  got, got_g = jax.jit(jax.value_and_grad(new, (0, 1)))(s, table)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  _close(got_g, want_g)
  # Zero-weight rows get no gradient; the padding row of the table neither.
  assert not np.any(np.asarray(got_g[0])[np.asarray(w) == 0])
  assert not np.any(np.asarray(got_g[1])[0])


@pytest.mark.parametrize("eps,alpha,chunk", [(0.0, 1.0, 8), (0.3, 2.5, 5), (0.1, 0.0, N)])
def test_rdrop_equals_the_reference_in_value_terms_and_gradient(eps, alpha, chunk):
  s1, s2, table, t, w = _inputs(1)

  def ref(s1, s2, table):
    a, b = (mask_padding_column(s @ table.T) for s in (s1, s2))
    ce = 0.5 * (
        losses.softmax_cross_entropy_sums(a, t, w, eps)[0]
        + losses.softmax_cross_entropy_sums(b, t, w, eps)[0]
    )
    kl = 0.5 * (losses.kl_soft_targets_sums(a, b, w)[0] + losses.kl_soft_targets_sums(b, a, w)[0])
    return ce + alpha * kl, {"ce": ce, "kl": kl}

  def new(s1, s2, table):
    return fused.rdrop_sums(s1, s2, table, t, w, eps, alpha, chunk)

  (want, want_terms), want_g = jax.value_and_grad(ref, (0, 1, 2), has_aux=True)(s1, s2, table)
  (got, got_terms), got_g = jax.jit(jax.value_and_grad(new, (0, 1, 2), has_aux=True))(s1, s2, table)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  _close(got_terms, want_terms)
  assert float(got_terms["kl"]) > 1e-3  # two different distributions
  _close(got_g, want_g)


def test_rdrop_of_one_pass_twice_is_its_cross_entropy():
  s, _, table, t, w = _inputs(2)
  total, terms = fused.rdrop_sums(s, s, table, t, w, 0.2, 3.0, 8)
  np.testing.assert_allclose(float(terms["kl"]), 0.0, atol=1e-5)
  np.testing.assert_allclose(
      float(total), float(fused.cross_entropy_sums(s, table, t, w, 0.2, 8)), rtol=1e-6
  )


def test_the_logged_terms_carry_no_gradient():
  # Only the total is differentiable; the terms are for logging.
  s1, s2, table, t, w = _inputs(3)
  g = jax.grad(lambda s: fused.rdrop_sums(s, s2, table, t, w, 0.0, 1.0, 8)[1]["ce"])(s1)
  assert not np.any(np.asarray(g))


@pytest.mark.slow
def test_the_result_does_not_depend_on_the_chunk_size():
  s1, s2, table, t, w = _inputs(4)

  def loss(a, b, c, chunk):
    return fused.rdrop_sums(a, b, c, t, w, 0.3, 1.0, chunk)[0]

  results = [
      jax.value_and_grad(loss, (0, 1, 2))(s1, s2, table, chunk) for chunk in (1, 4, 7, N, 100)
  ]
  for r in results[1:]:
    _close(r, results[0])
