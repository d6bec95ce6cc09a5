"""Per-example metrics and the paired bootstrap comparison (ccrec/evaluation/significance.py)."""

import numpy as np
import pytest

from ccrec.evaluation import metrics as metrics_lib
from ccrec.evaluation import significance


def test_per_example_means_equal_the_reported_metrics():
  rng = np.random.default_rng(0)
  rank = rng.integers(0, 40, size=500)
  sums = metrics_lib.metric_sums(rank, np.ones(500, np.float32))
  reported = metrics_lib.finalize({k: float(v) for k, v in sums.items()})
  for metric in ("HR@5", "MRR@10", "NDCG@10", "NDCG@20"):
    assert significance.per_example(rank, metric).mean() == pytest.approx(
        reported[metric], rel=1e-6
    )


def test_per_example_by_hand():
  rank = np.array([0, 1, 9, 10])
  np.testing.assert_allclose(significance.per_example(rank, "HR@10"), [1, 1, 1, 0])
  np.testing.assert_allclose(significance.per_example(rank, "MRR@10"), [1, 0.5, 0.1, 0])
  np.testing.assert_allclose(
      significance.per_example(rank, "NDCG@10"), [1, 1 / np.log2(3), 1 / np.log2(11), 0]
  )


@pytest.mark.parametrize("metric", ["ndcg@10", "NDCG@0", "AUC@10", "NDCG10", "HR@-1"])
def test_unknown_metric_is_named(metric):
  with pytest.raises(ValueError, match="unknown metric"):
    significance.per_example(np.zeros(3, np.int64), metric)


def test_bad_ranks_are_refused():
  with pytest.raises(ValueError, match=">= 0"):
    significance.per_example(np.array([0, -1]), "HR@10")
  with pytest.raises(ValueError, match="integer"):
    significance.per_example(np.array([0.5, 1.0]), "HR@10")


def test_identical_models_differ_by_exactly_zero():
  rank = np.random.default_rng(1).integers(0, 50, size=300)
  result = significance.compare(rank, rank.copy(), "NDCG@10", num_samples=500)
  assert result.diff == 0.0 and result.ci_low == 0.0 and result.ci_high == 0.0
  assert result.p_value == 1.0 and result.se_diff == 0.0
  assert result.mean_a == result.mean_b


def test_a_clearly_better_model_is_significant_and_the_figures_are_consistent():
  rng = np.random.default_rng(2)
  rank_a = rng.integers(0, 60, size=1000)
  rank_b = np.maximum(rank_a - rng.integers(0, 8, size=1000), 0)  # b never worse
  result = significance.compare(rank_a, rank_b, "HR@10", num_samples=2000)
  a = significance.per_example(rank_a, "HR@10")
  b = significance.per_example(rank_b, "HR@10")
  assert result.n == 1000
  assert result.diff == pytest.approx(b.mean() - a.mean())
  assert result.mean_b - result.mean_a == pytest.approx(result.diff)
  assert result.se_a == pytest.approx(a.std(ddof=1) / np.sqrt(1000))
  assert result.se_diff == pytest.approx((b - a).std(ddof=1) / np.sqrt(1000))
  assert 0 < result.ci_low < result.diff < result.ci_high
  assert result.p_value < 0.01
  # Paired: the interval follows the per-example differences (an unpaired bootstrap would
  # follow hypot(se_a, se_b), about twice as wide for these strongly correlated models).
  assert result.ci_high - result.ci_low == pytest.approx(2 * 1.96 * result.se_diff, rel=0.15)
  assert result.se_diff < 0.6 * np.hypot(result.se_a, result.se_b)


def test_under_the_null_the_test_rejects_at_its_level():
  # Two models with the same rank distribution, drawn independently per example: a 5%
  # test should reject about 5% of the time, and the 95% interval miss 0 as often.
  rejected = missed = 0
  trials = 200
  for seed in range(trials):
    rng = np.random.default_rng(100 + seed)
    rank_a, rank_b = rng.integers(0, 20, size=(2, 300))
    result = significance.compare(rank_a, rank_b, "NDCG@10", num_samples=400, seed=seed)
    rejected += result.p_value < 0.05
    missed += not result.ci_low <= 0.0 <= result.ci_high
  # 200 trials: a binomial(200, 0.05) count is 10 +- 3; a discrete metric makes the test
  # slightly conservative.
  assert 3 <= rejected <= 20, rejected
  assert 3 <= missed <= 20, missed


def test_same_seed_same_interval_other_seed_other_resamples():
  rng = np.random.default_rng(4)
  rank_a, rank_b = rng.integers(0, 30, size=(2, 400))
  one = significance.compare(rank_a, rank_b, "MRR@10", num_samples=300, seed=7)
  two = significance.compare(rank_a, rank_b, "MRR@10", num_samples=300, seed=7)
  other = significance.compare(rank_a, rank_b, "MRR@10", num_samples=300, seed=8)
  assert one == two
  assert (other.ci_low, other.ci_high) != (one.ci_low, one.ci_high)
  assert other.diff == one.diff


def test_ratio_and_its_interval():
  rng = np.random.default_rng(5)
  rank_a = rng.integers(0, 30, size=800)
  same = significance.compare(rank_a, rank_a.copy(), "NDCG@10", num_samples=300)
  assert same.ratio == 1.0 and same.ratio_ci_low == 1.0 and same.ratio_ci_high == 1.0
  rank_b = np.maximum(rank_a - rng.integers(0, 6, size=800), 0)  # b never worse
  result = significance.compare(rank_a, rank_b, "NDCG@10", num_samples=1000)
  ndcg = lambda r: np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0)  # by hand, rank 0 = top
  assert result.ratio == pytest.approx(ndcg(rank_b).mean() / ndcg(rank_a).mean())
  assert 1.0 < result.ratio_ci_low < result.ratio < result.ratio_ci_high
  # The ratio's interval is that of the difference, divided by about mean_a.
  width = (result.ratio_ci_high - result.ratio_ci_low) * result.mean_a
  assert width == pytest.approx(result.ci_high - result.ci_low, rel=0.25)
  never_hit = significance.compare(np.full(10, 50), np.zeros(10, np.int64), "HR@10", num_samples=50)
  assert np.isnan(never_hit.ratio) and np.isnan(never_hit.ratio_ci_low)


def test_several_runs_are_averaged_example_by_example():
  rng = np.random.default_rng(6)
  rank_a = rng.integers(0, 40, size=(3, 600))
  rank_b = np.maximum(rank_a - rng.integers(-3, 6, size=(3, 600)), 0)
  pooled = significance.compare(rank_a, rank_b, "NDCG@10", num_samples=500, seed=3)
  per_run = [significance.compare(a, b, "NDCG@10", num_samples=10) for a, b in zip(rank_a, rank_b)]
  assert pooled.runs == 3 and pooled.n == 600
  assert pooled.mean_a == pytest.approx(np.mean([r.mean_a for r in per_run]))
  assert pooled.mean_b == pytest.approx(np.mean([r.mean_b for r in per_run]))
  assert pooled.diff == pytest.approx(np.mean([r.diff for r in per_run]))
  ndcg = lambda r: np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0)
  assert pooled.ratio == pytest.approx(ndcg(rank_b).mean() / ndcg(rank_a).mean())
  assert pooled.ci_low < pooled.diff < pooled.ci_high
  # Averaging runs shrinks the per-example noise: the pooled interval is narrower than a
  # single run's.
  one = significance.compare(rank_a[0], rank_b[0], "NDCG@10", num_samples=500, seed=3)
  assert pooled.ci_high - pooled.ci_low < one.ci_high - one.ci_low
  # One run given as [1, N] is that run.
  single = significance.compare(rank_a[:1], rank_b[:1], "NDCG@10", num_samples=500, seed=3)
  assert single.diff == one.diff and (single.ci_low, single.ci_high) == (one.ci_low, one.ci_high)
  with pytest.raises(ValueError, match=r"shapes \[3, 600\] and \[2, 600\]"):
    significance.compare(rank_a, rank_b[:2], "NDCG@10")
  with pytest.raises(ValueError, match="at least one run"):
    significance.compare(rank_a[:0], rank_b[:0], "NDCG@10")


def test_mismatched_or_tiny_inputs_are_refused():
  with pytest.raises(ValueError, match="different numbers of examples or runs"):
    significance.compare(np.zeros(5, np.int64), np.zeros(6, np.int64), "HR@10")
  with pytest.raises(ValueError, match="at least 2"):
    significance.compare(np.zeros(1, np.int64), np.zeros(1, np.int64), "HR@10")
  with pytest.raises(ValueError, match="num_samples"):
    significance.compare(np.zeros(5, np.int64), np.zeros(5, np.int64), "HR@10", num_samples=0)
  with pytest.raises(ValueError, match="confidence"):
    significance.compare(np.zeros(5, np.int64), np.zeros(5, np.int64), "HR@10", confidence=1.0)


def test_rankings_of_different_examples_are_refused():
  significance.check_same_examples(np.arange(4), np.arange(4), "a", "b")
  with pytest.raises(ValueError, match="ranked on 4 and 5 examples"):
    significance.check_same_examples(np.arange(4), np.arange(5), "runs/a", "runs/b")
  with pytest.raises(ValueError, match="example 2: target 2 against 7"):
    significance.check_same_examples(np.arange(4), np.array([0, 1, 7, 3]), "runs/a", "runs/b")
