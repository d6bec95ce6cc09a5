"""Ranks and per-example metrics in numpy; the same rank rule as the jitted one."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.evaluation import metrics, ranking


def test_target_rank_numpy_equals_jax_with_ties_and_padding():
  rng = np.random.default_rng(0)
  scores = rng.integers(-3, 4, (6, 12)).astype(np.float32)  # many ties
  scores[:, 0] = 9.0  # padding scores highest and is ignored
  target = rng.integers(1, 12, 6)
  want = [int((np.delete(row[1:], t - 1) >= row[t]).sum()) for row, t in zip(scores, target)]
  got = ranking.target_rank(scores, target)
  assert got.dtype == np.int32 and got.tolist() == want
  np.testing.assert_array_equal(
      np.asarray(metrics.target_rank(jnp.asarray(scores), jnp.asarray(target))), want
  )


def test_metrics_from_ranks_hand_computed():
  m = ranking.metrics_from_ranks(np.array([0, 1, 4, 30]), ks=(5,))
  assert m["count"] == 4 and m["HR@5"] == 0.75
  assert m["MRR@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)
  assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
  assert np.isnan(ranking.metrics_from_ranks(np.zeros(0, np.int64))["NDCG@10"])
  assert ranking.KS == metrics.KS == (5, 10, 20)
