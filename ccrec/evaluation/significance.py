"""Per-example metrics and paired comparisons of two models on the same examples. numpy only.

On a small test split single-seed gaps are mostly noise (ml-100k: 943 users, so
one model's NDCG@10 has a standard error near 0.0055). Two models scored on the
*same* examples are compared through their per-example differences: `compare`
reports the paired difference with a paired-bootstrap confidence interval and
p-value. How much pairing narrows the interval depends on how alike the two
models' per-example values are (ml-100k, NDCG@10: a student against the base
student it was trained from, paired se about 0.003; a teacher against a
student, about 0.0055, as wide as one model's own se).

Per-example values are `ranking.per_example`'s (rank 0 = best; ties count against the
target), imported here for `compare`'s callers: their mean is the reported metric.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ccrec.evaluation.ranking import per_example


def check_same_examples(
    targets_a: np.ndarray, targets_b: np.ndarray, name_a: str, name_b: str
) -> None:
  """Raises ValueError unless the two rankings have the same targets, example by example.

  Equal targets in the same order stand in for "the same examples": the prefixes are
  not compared (two datasets with equal targets but other histories would pass).
  """
  targets_a, targets_b = np.asarray(targets_a), np.asarray(targets_b)
  if targets_a.shape != targets_b.shape:
    raise ValueError(
        f"{name_a} and {name_b} were ranked on {targets_a.size} and "
        f"{targets_b.size} examples: a paired comparison needs the same dataset"
    )
  if not np.array_equal(targets_a, targets_b):
    first = int(np.flatnonzero(targets_a != targets_b)[0])
    raise ValueError(
        f"{name_a} and {name_b} hold different examples (the first difference is "
        f"example {first}: target {targets_a[first]} against {targets_b[first]}): "
        "a paired comparison needs the same dataset"
    )


@dataclasses.dataclass(frozen=True)
class PairedComparison:
  """Model b against model a on the same n examples; diff = mean_b - mean_a.

  With several runs per side (`runs` > 1) every mean is that of the run-averaged values.
  """

  metric: str
  n: int
  mean_a: float
  mean_b: float
  diff: float
  se_a: float  # standard error of mean_a over examples
  se_b: float
  se_diff: float  # standard error of the paired difference
  ci_low: float  # paired-bootstrap percentile interval of diff
  ci_high: float
  confidence: float
  p_value: float  # two-sided paired-bootstrap p-value of diff = 0
  num_samples: int
  ratio: float = float("nan")  # mean_b / mean_a (nan when mean_a is 0)
  ratio_ci_low: float = float("nan")  # percentile interval of the ratio, same resamples
  ratio_ci_high: float = float("nan")
  runs: int = 1  # runs (seeds) per side, averaged example by example

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _se(x: np.ndarray) -> float:
  return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def compare(
    rank_a: np.ndarray,
    rank_b: np.ndarray,
    metric: str,
    *,
    num_samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
  """Paired comparison of two models' ranks on the same examples (same order).

  `rank_a` and `rank_b` are [N], or [S, N] for S runs of each model (seeds) ranked on the
  same N examples: each example's value is then its mean over the S runs, and the means,
  difference and ratio are those of the S-run averages. The bootstrap resamples examples
  with replacement (`num_samples` times, the same resamples for both models and for
  every run) and takes the percentile intervals of the difference of means and of their
  ratio mean_b / mean_a. The p-value is the share of centred bootstrap differences at
  least as far from 0 as the observed one (two-sided), with the usual +1 correction, so
  it is never 0. The intervals measure the sampling of the examples with the runs held
  fixed: they do not include what another set of seeds would have trained.
  """
  rank_a, rank_b = np.asarray(rank_a), np.asarray(rank_b)
  if rank_a.shape != rank_b.shape:
    raise ValueError(
        f"the two models were ranked on different numbers of examples or runs "
        f"(shapes {list(rank_a.shape)} and {list(rank_b.shape)}): compare the "
        "same runs on the same split"
    )
  if rank_a.ndim not in (1, 2) or 0 in rank_a.shape[:-1]:
    raise ValueError(
        f"ranks must be [N] or [runs, N] with at least one run, got shape " f"{list(rank_a.shape)}"
    )
  runs = 1 if rank_a.ndim == 1 else rank_a.shape[0]
  a = np.mean([per_example(r, metric) for r in rank_a.reshape(runs, -1)], axis=0)
  b = np.mean([per_example(r, metric) for r in rank_b.reshape(runs, -1)], axis=0)
  if a.size < 2:
    raise ValueError(f"need at least 2 examples to compare, got {a.size}")
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  n = a.size
  delta = b - a
  observed = float(delta.mean())
  rng = np.random.default_rng(seed)
  # Chunks of resamples keep memory at about 8M indices whatever n is.
  chunk = max(1, 8_000_000 // n)
  boot, boot_a, boot_b = np.empty(num_samples), np.empty(num_samples), np.empty(num_samples)
  for start in range(0, num_samples, chunk):
    stop = min(num_samples, start + chunk)
    idx = rng.integers(0, n, size=(stop - start, n))
    boot[start:stop] = delta[idx].mean(axis=1)
    boot_a[start:stop], boot_b[start:stop] = a[idx].mean(axis=1), b[idx].mean(axis=1)
  tail = (1.0 - confidence) / 2.0
  low, high = np.quantile(boot, [tail, 1.0 - tail])
  extreme = np.count_nonzero(np.abs(boot - observed) >= abs(observed) - 1e-15)
  ratio = float(b.mean() / a.mean()) if a.mean() > 0 else float("nan")
  r_low = r_high = float("nan")  # undefined once a resample of model a scores 0
  if np.all(boot_a > 0):
    r_low, r_high = np.quantile(boot_b / boot_a, [tail, 1.0 - tail])
  return PairedComparison(
      metric=metric,
      n=n,
      mean_a=float(a.mean()),
      mean_b=float(b.mean()),
      diff=observed,
      se_a=_se(a),
      se_b=_se(b),
      se_diff=_se(delta),
      ci_low=float(low),
      ci_high=float(high),
      confidence=confidence,
      p_value=(extreme + 1) / (num_samples + 1),
      num_samples=num_samples,
      ratio=ratio,
      ratio_ci_low=float(r_low),
      ratio_ci_high=float(r_high),
      runs=runs,
  )
