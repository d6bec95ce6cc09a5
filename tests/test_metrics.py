"""Tests for ccrec.evaluation.metrics: ranks, ties, padding, chunking, sums."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.evaluation import metrics

target_rank = jax.jit(metrics.target_rank)
metric_sums = jax.jit(metrics.metric_sums, static_argnames="ks")


def test_target_rank_hand_computed_ties_and_padding():
  # Column 0 (padding) scores highest and must be ignored.
  scores = jnp.array([[9.0, 1.0, 3.0, 3.0, 2.0]] * 4)
  target = jnp.array([2, 3, 4, 1])
  # target 2 and 3 tie at 3.0: the tie counts against each -> 1; target 4 (2.0):
  # items 2, 3 higher -> 2; target 1 (1.0): 3.
  np.testing.assert_array_equal(np.asarray(target_rank(scores, target)), [1, 1, 2, 3])
  assert target_rank(scores, target).dtype == jnp.int32


def test_target_rank_ignores_padding_with_minus_inf_too():
  scores = jnp.array([[-jnp.inf, 0.5, 0.2]])
  np.testing.assert_array_equal(np.asarray(target_rank(scores, jnp.array([2]))), [1])


def test_metric_sums_hand_computed():
  rank = jnp.array([0, 2, 3, 10, 25, 0])
  weight = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
  sums = jax.device_get(metric_sums(rank, weight))
  assert set(sums) == {f"{m}@{k}" for m in ("HR", "MRR", "NDCG") for k in (5, 10, 20)} | {"count"}
  expected = {
      "HR@5": 3,
      "MRR@5": 1 + 1 / 3 + 1 / 4,
      "NDCG@5": 1 + 1 / 2 + 1 / np.log2(5),
      "HR@10": 3,
      "MRR@10": 1 + 1 / 3 + 1 / 4,
      "NDCG@10": 1 + 1 / 2 + 1 / np.log2(5),
      "HR@20": 4,
      "MRR@20": 1 + 1 / 3 + 1 / 4 + 1 / 11,
      "NDCG@20": 1 + 1 / 2 + 1 / np.log2(5) + 1 / np.log2(12),
      "count": 5,
  }
  for key, value in expected.items():
    np.testing.assert_allclose(float(sums[key]), value, rtol=1e-6, err_msg=key)
  means = metrics.finalize({k: float(v) for k, v in sums.items()})
  assert "count" not in means
  np.testing.assert_allclose(means["HR@20"], 4 / 5)
  np.testing.assert_allclose(means["MRR@5"], expected["MRR@5"] / 5)


def test_zero_weight_rows_do_not_count_and_weights_scale():
  rank = jnp.array([0, 1, 7])
  base = jax.device_get(metric_sums(rank, jnp.array([1.0, 1.0, 0.0]), ks=(5,)))
  first_two = jax.device_get(metric_sums(rank[:2], jnp.ones(2), ks=(5,)))
  for key in base:
    np.testing.assert_allclose(float(base[key]), float(first_two[key]), rtol=1e-6)
  doubled = jax.device_get(metric_sums(rank, jnp.array([2.0, 2.0, 0.0]), ks=(5,)))
  assert metrics.finalize(doubled) == pytest.approx(metrics.finalize(base))


def test_finalize_empty_is_nan():
  means = metrics.finalize({"HR@5": 0.0, "count": 0.0})
  assert np.isnan(means["HR@5"])


# --- chunked ranking ---------------------------------------------------------------


def _problem(batch=6, num_items=23, d=4, seed=0):
  """Integer-valued embeddings: exact float dot products and many ties."""
  rng = np.random.default_rng(seed)
  table = rng.integers(-2, 3, size=(num_items + 1, d)).astype(np.float32)
  s = rng.integers(-2, 3, size=(batch, d)).astype(np.float32)
  target = rng.integers(1, num_items + 1, size=batch).astype(np.int32)
  return table, s, target


def _score_fn(table):
  return lambda s, ids: s @ jnp.take(table, ids, axis=0).T


@functools.partial(jax.jit, static_argnames=("num_items", "chunk_size"))
def _chunked(table, s, target, num_items, chunk_size):
  return metrics.chunked_target_rank(_score_fn(table), s, target, num_items, chunk_size)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 7, 23, 64])
def test_chunked_equals_unchunked(chunk_size):
  table, s, target = _problem()
  full = s @ table.T
  full[:, 0] = 1e9  # padding scores high: still ignored
  expected = np.asarray(target_rank(full, target))
  got = np.asarray(_chunked(table, s, target, 23, chunk_size))
  np.testing.assert_array_equal(got, expected)
  assert len(set(expected.tolist())) > 1  # a non-trivial problem


def test_chunked_counts_ties_against_the_target_and_excludes_own_column():
  # Items 1..5 share one embedding; the target (item 3) ties with 4 of them.
  table = np.array([[0.0, 0.0]] + [[1.0, 0.0]] * 5 + [[2.0, 0.0], [0.5, 0.0]], np.float32)
  s, target = np.array([[1.0, 1.0]], np.float32), np.array([3], np.int32)
  np.testing.assert_array_equal(np.asarray(_chunked(table, s, target, 7, 3)), [5])

  # A target score computed slightly lower (rounding of another code path)
  # does not rank the target below itself.
  low = lambda s, t: jnp.sum(s * jnp.take(table, t, axis=0), -1) - 1e-4
  rank = jax.jit(
      lambda s, t: metrics.chunked_target_rank(_score_fn(table), s, t, 7, 3, target_score_fn=low)
  )(s, target)
  np.testing.assert_array_equal(np.asarray(rank), [5])  # 4 copies + item 6, never itself


def test_chunked_ignores_ids_beyond_the_catalog():
  table, s, target = _problem(num_items=10)

  def score_fn(ss, ids):
    # Any id beyond the catalog would outrank everything if it were counted.
    return jnp.where(ids[None, :] > 10, 1e9, _score_fn(table)(ss, ids))

  full = s @ table.T
  full[:, 0] = -np.inf
  expected = np.asarray(target_rank(full, target))
  got = jax.jit(lambda ss, t: metrics.chunked_target_rank(score_fn, ss, t, 10, 4))(s, target)
  np.testing.assert_array_equal(np.asarray(got), expected)
  with pytest.raises(ValueError):
    metrics.chunked_target_rank(score_fn, s, target, 10, 0)
