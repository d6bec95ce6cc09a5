"""Numpy scoring: code tables == materialised table, exact top-k, TT rows == the Flax TT model."""

import math

import numpy as np
import pytest

from ccrec.serving import nn, scoring


def _reference_top(scores, k):
  order = np.lexsort((np.arange(len(scores)), -scores))[:k]
  return order, scores[order]


@pytest.mark.parametrize("num_items,k_size,dtype", [(1000, 16, np.uint8), (777, 300, np.uint16)])
def test_code_scorer_equals_table(num_items, k_size, dtype):
  rng = np.random.default_rng(0)
  m, d = 3, 8
  codes = rng.integers(0, k_size, (m, num_items + 1)).astype(dtype)
  books = rng.standard_normal((m, k_size, d)).astype(np.float32)
  scorer = scoring.CodeScorer(codes, books, chunk=128)  # several chunks, a ragged last one
  table = sum(books[i][codes[i].astype(np.int64)] for i in range(m))
  table[0] = 0.0
  assert np.allclose(scorer.table(), table, atol=1e-6)
  s = rng.standard_normal((5, d)).astype(np.float32)
  single = np.stack([scorer.score(x) for x in s])
  columns = scorer.score_columns(s)
  assert columns.shape == (num_items + 1, 5)
  assert np.all(single[:, 0] == -np.inf) and np.all(columns[0] == -np.inf)
  assert np.allclose(single[:, 1:], s @ table[1:].T, atol=1e-5)
  assert np.allclose(columns.T[:, 1:], single[:, 1:], atol=1e-5)
  assert np.allclose(
      scorer.lookup(np.array([[0, 3], [5, 1]])), table[np.array([[0, 3], [5, 1]])], atol=1e-6
  )


def test_code_scorer_rejects_codes_out_of_range():
  with pytest.raises(ValueError, match=">= K=4"):
    scoring.CodeScorer(np.full((2, 5), 4, np.uint8), np.zeros((2, 4, 3), np.float32))


def test_code_tables():
  rng = np.random.default_rng(1)
  s = rng.standard_normal((2, 5)).astype(np.float32)
  books = rng.standard_normal((3, 4, 5)).astype(np.float32)
  assert np.allclose(scoring.code_tables(s, books), np.einsum("bd,mkd->bmk", s, books), atol=1e-6)


@pytest.mark.parametrize("n,k", [(10, 3), (50, 50), (5000, 20), (100_003, 20), (100_003, 1)])
def test_top_k_is_exact_with_ties(n, k):
  rng = np.random.default_rng(n)
  scores = rng.integers(-30, 30, n).astype(np.float32)  # many exact ties
  scores[0] = -np.inf
  ids, vals = scoring.top_k(scores, k)
  ref_ids, ref_vals = _reference_top(scores, k)
  assert np.array_equal(ids, ref_ids) and np.array_equal(vals, ref_vals)
  cols = np.stack([scores, rng.standard_normal(n).astype(np.float32)], axis=1)
  bids, bvals = scoring.top_k_columns(cols, k)
  for c in range(2):
    ref_ids, ref_vals = _reference_top(cols[:, c], k)
    assert np.array_equal(bids[c], ref_ids) and np.array_equal(bvals[c], ref_vals)


def test_top_k_clips_k():
  ids, vals = scoring.top_k(np.array([1.0, 3.0, 2.0], np.float32), 10)
  assert ids.tolist() == [1, 2, 0] and vals.tolist() == [3.0, 2.0, 1.0]


def test_tt_scorer_matches_hand_contraction():
  # E[row, (j1, j2, j3)] = G1[:, i1, j1, :] @ G2[:, i2, j2, :] @ G3[:, i3, j3, :], row = mixed
  # radix (i1, i2, i3), most significant first (as ccrec/models/tt.py; the runtime test
  # checks a TT bundle against the Flax model end to end).
  rng = np.random.default_rng(0)
  items, num_rows = (7, 6, 5), 201  # d factors (2, 4, 2)
  shapes = [(1, 7, 2, 3), (3, 6, 4, 2), (2, 5, 2, 1)]
  cores = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
  want = np.zeros((num_rows, 16))
  for row in range(1, num_rows):
    i = (row // 30, row // 5 % 6, row % 5)
    for j in range(16):
      j1, j2, j3 = j // 8, j // 2 % 4, j % 2
      want[row, j] = (
          cores[0][:, i[0], j1, :] @ cores[1][:, i[1], j2, :] @ cores[2][:, i[2], j3, :]
      )[0, 0]
  rebuild = scoring.TTScorer(cores, items, num_rows)
  cached = scoring.TTScorer(cores, items, num_rows, cache=True)
  assert np.allclose(rebuild.table(), want, atol=1e-5)
  assert np.allclose(cached.table(), want, atol=1e-5)
  ids = np.array([[0, 5], [200, 17]])
  assert np.allclose(rebuild.lookup(ids), want[ids], atol=1e-5)
  assert np.allclose(scoring.tt_rows(cores, items, np.arange(1, num_rows)), want[1:], atol=1e-5)
  s = rng.standard_normal((3, 16)).astype(np.float32)
  for scorer in (rebuild, cached):
    got = scorer.score_columns(s)
    assert got.shape == (num_rows, 3) and np.all(got[0] == -np.inf)
    assert np.allclose(got[1:], want[1:] @ s.T, atol=1e-4)
    assert np.allclose(scorer.score(s[0])[1:], want[1:] @ s[0], atol=1e-4)


def test_erf_and_gelu_accuracy():
  x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, -0.0, 1e-9, 40.0, -40.0]])
  want = np.array([math.erf(v) for v in x])
  assert np.abs(nn.erf(x) - want).max() < 1e-11
  x32 = x.astype(np.float32)
  want32 = np.array([math.erf(float(v)) for v in x32])
  assert np.abs(nn.erf(x32, np.float32) - want32).max() < 1e-7
  assert float(nn.erf(np.float64(0.5))) == pytest.approx(math.erf(0.5), abs=1e-12)
  assert np.isnan(nn.erf(np.array([np.nan]))).all()
  g = nn.gelu(x32.reshape(7, -1)[:, :2000])
  xs = x32.reshape(7, -1)[:, :2000].astype(np.float64)
  exact = 0.5 * xs * (1 + np.vectorize(math.erf)(xs / math.sqrt(2)))
  assert g.dtype == np.float32 and np.allclose(g, exact, atol=1e-6, rtol=1e-6)
