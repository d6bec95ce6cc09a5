"""Tests for ccrec/serving/pruned.py: the pruned top-k equals the full scan, element for element,
on random and clustered codes, with ties, exclusions and any k; CodeScorer's option."""

import numpy as np
import pytest

from ccrec.benchmarks import pruned as pruned_benchmark
from ccrec.serving import pruned
from ccrec.serving.scoring import CodeScorer, code_tables, top_k


def _case(v, m, kk, d=8, clustered=True, seed=0, ties=False):
  rng = np.random.default_rng(seed)
  if clustered:
    codes = pruned_benchmark.clustered_codes(v, m, kk, num_clusters=max(2, v // 40), seed=seed)
  else:
    codes = rng.integers(0, kk, (m, v + 1)).astype(np.uint8)
    codes[:, 0] = 0
  if ties:  # few distinct values: many items with equal scores
    books = rng.integers(-1, 2, (m, kk, d)).astype(np.float32)
    s = rng.integers(-1, 2, (5, d)).astype(np.float32)
  else:
    books = pruned_benchmark.clustered_codebooks(m, kk, d, seed=seed)
    s = rng.normal(size=(5, d)).astype(np.float32)
  return codes, books, s


def _check(codes, books, s, ks, exclude=None, **search):
  scorer = CodeScorer(codes, books)
  index = pruned.PrunedIndex(codes, books.shape[1], batch_items=64)
  scored = []
  for row in s:
    scores = scorer.score(row)
    if exclude is not None:
      scores[exclude] = -np.inf
    t = code_tables(row[None], books)[0]
    for k in ks:
      want_ids, want_vals = top_k(scores, k)
      ids, vals, n = index.search(t, k, exclude, **search)
      np.testing.assert_array_equal(ids, want_ids, err_msg=f"k={k}")
      np.testing.assert_array_equal(vals, want_vals, err_msg=f"k={k}")
      assert ids.dtype == np.int64 and vals.dtype == np.float32
      scored.append(n)
  return scored


@pytest.mark.parametrize("clustered", [True, False])
@pytest.mark.parametrize("m,kk", [(1, 16), (3, 8), (4, 32)])
def test_equals_the_full_scan(clustered, m, kk):
  codes, books, s = _case(800, m, kk, clustered=clustered)
  _check(codes, books, s, [1, 5, 10, 37, 200, 799, 800, 801, 1000])


def test_ties_and_duplicate_codes_break_by_the_smaller_id():
  codes, books, s = _case(600, 3, 4, ties=True)
  scores = CodeScorer(codes, books).score(s[0])
  assert len(np.unique(scores[1:])) < 30  # the case is full of ties
  _check(codes, books, s, [1, 3, 10, 50, 300, 600, 601])


def test_every_pivot_and_the_global_bound_give_the_same_result(monkeypatch):
  codes, books, s = _case(700, 4, 16)
  for p in range(4):
    _check(codes, books, s[:2], [1, 10, 100], pivot=p)
  monkeypatch.setattr(pruned, "_PRESENCE_CAP", 0)  # the bound of Petrov & Macdonald
  _check(codes, books, s, [1, 10, 100])


def test_exclusions():
  codes, books, s = _case(500, 3, 16)
  exclude = np.array([1, 5, 77, 300, 499, 500])
  _check(codes, books, s, [1, 10, 493, 494, 495, 501], exclude=exclude)


def test_clustered_codes_prune_most_items():
  codes, books, _ = _case(20_000, 4, 64, d=16)
  rng = np.random.default_rng(1)
  scorer = CodeScorer(codes, books)
  s = scorer.lookup(rng.integers(1, 20_001, 5)) + 0.1 * rng.normal(size=(5, 16)).astype(np.float32)
  scored = _check(codes, books, s.astype(np.float32), [10])
  assert max(scored) < 0.5 * 20_000, scored


def test_code_scorer_option():
  codes, books, s = _case(900, 4, 16)
  plain, fast = CodeScorer(codes, books), CodeScorer(codes, books, pruned=True)
  assert plain.index is None and fast.index is not None
  for row in s:
    for k, exclude in ((10, None), (50, np.array([3, 4])), (905, None)):
      a, b = plain.top_k(row, k, exclude), fast.top_k(row, k, exclude)
      np.testing.assert_array_equal(a[0], b[0])
      np.testing.assert_array_equal(a[1], b[1])


def test_benchmark_reports_agreement_on_a_small_catalog():
  out = pruned_benchmark.benchmark(
      num_items=5_000, d=16, num_codebooks=4, codebook_size=32, k=10, queries=3
  )
  assert out["identical"] and 0 < out["mean_share_scored"] <= 1
  assert {"full_scan_s_per_query", "pruned_s_per_query", "index_build_s"} <= set(out)
  assert pruned_benchmark.benchmark(
      num_items=2_000, d=8, num_codebooks=2, codebook_size=16, queries=2, clustered=False
  )["identical"]


def test_benchmark_on_given_codes_reads_their_sizes():
  codes = pruned_benchmark.clustered_codes(3_000, 3, 16, seed=4)
  books = pruned_benchmark.clustered_codebooks(3, 16, 12, seed=4)
  out = pruned_benchmark.benchmark(codes=codes, books=books, k=7, queries=4)
  assert out["identical"] and out["codes"] == "given"
  assert (out["num_items"], out["num_codebooks"], out["codebook_size"], out["d"]) == (
      3_000,
      3,
      16,
      12,
  )
  with pytest.raises(ValueError, match="both codes and books"):
    pruned_benchmark.benchmark(codes=codes, queries=1)
