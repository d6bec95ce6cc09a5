"""The chunked least-squares steps of the codes stage against their dense references.

ccrec.train.code_refinement streams the item table in chunks (no [V, M*K], [V, K] or
[V, M, d] temporary); tests/dense_code_refinement.py is the same arithmetic on whole
arrays. They must agree to float rounding, for chunks that do not divide V.
"""

import dense_code_refinement as dense
import numpy as np
import pytest

from ccrec.train import code_refinement as cr

CHUNKS = (1, 7, 64, 10_000)  # one item, chunks that do not divide V, one chunk


def _problem(
    seed: int,
    v: int = 211,
    m: int = 3,
    k: int = 8,
    d: int = 5,
    *,
    weighted: bool = False,
    collisions: bool = False,
):
  """A table near planted codes (so refinement has structure to find), start codes, weights."""
  rng = np.random.default_rng(seed)
  books = rng.normal(size=(m, k, d)).astype(np.float32)
  planted = rng.integers(0, k, (v + 1, m))
  table = np.zeros((v + 1, d), np.float32)
  table[1:] = sum(books[j][planted[1:, j]] for j in range(m)) + 0.3 * rng.normal(size=(v, d))
  codes = np.zeros((v + 1, m), np.uint8)
  codes[1:] = rng.integers(0, k, (v, m))
  if collisions:
    codes[1 : v // 3] = codes[1]  # a third of the items on one code
  weights = None
  if weighted:
    weights = np.zeros(v + 1)
    weights[1:] = rng.integers(1, 50, v).astype(np.float64)
    weights[1:] /= weights[1:].mean()
  return table, codes, books, weights


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("weighted", [False, True])
def test_normal_equations_and_refit_match_the_dense_solve(chunk, weighted):
  table, codes, _, weights = _problem(0, weighted=weighted)
  m, k, d = codes.shape[1], 8, table.shape[1]
  # The dense normal equations: the explicit one-hot design matrix A [V, M*K].
  design = np.zeros((len(codes) - 1, m * k))
  for j in range(m):
    design[np.arange(len(codes) - 1), j * k + codes[1:, j]] = 1.0
  w = np.ones(len(codes) - 1) if weights is None else weights[1:]
  gram, rhs = cr.normal_equations(table, codes, k, weights, chunk=chunk)
  np.testing.assert_allclose(gram, design.T @ (w[:, None] * design), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(
      rhs, design.T @ (w[:, None] * table[1:].astype(np.float64)), rtol=1e-10, atol=1e-10
  )
  books, mse = cr.refit_codebooks(table, codes, k, item_weights=weights, chunk=chunk)
  ref_books, ref_mse = dense.refit_codebooks(table, codes, k, item_weights=weights)
  assert books.dtype == np.float32 and books.shape == (m, k, d)
  np.testing.assert_allclose(books, ref_books, rtol=1e-5, atol=1e-6)
  assert mse == pytest.approx(ref_mse, rel=1e-10)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_reconstruct_and_mse_match_the_dense_sum(chunk):
  table, codes, books, weights = _problem(1, weighted=True)
  out = cr.reconstruct(codes, books, chunk=chunk)
  np.testing.assert_array_equal(out, dense.reconstruct(codes, books))
  err = np.sum(np.square(out[1:] - table[1:]).astype(np.float64), axis=1)
  assert cr.weighted_mse(table, codes, books, chunk=chunk) == pytest.approx(err.mean(), rel=1e-6)
  assert cr.weighted_mse(table, codes, books, weights, chunk=chunk) == pytest.approx(
      np.sum(weights[1:] * err) / weights[1:].sum(), rel=1e-6
  )


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("weighted", [False, True])
def test_refine_codes_matches_the_dense_refinement(chunk, weighted):
  table, codes, _, weights = _problem(2, weighted=weighted)
  got = cr.refine_codes(table, codes, 8, iterations=6, item_weights=weights, chunk=chunk)
  ref = dense.refine_codes(table, codes, 8, iterations=6, item_weights=weights)
  assert got[0].dtype == codes.dtype and not got[0][0].any()
  np.testing.assert_array_equal(got[0], ref[0])
  np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[2], ref[2], rtol=1e-9)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(2, 4, 3, 30), (3, 5, 4, 120), (1, 40, 3, 50)])
def test_deduplicate_codes_matches_the_dense_search(chunk, weighted, shape):
  m, k, d, v = shape  # (2, 4, .., 30): 16 codes for 30 items, some stay shared; the pair
  # search runs whenever the M*K single changes are all taken.
  table, codes, books, weights = _problem(
      3 + m, v=v, m=m, k=k, d=d, weighted=weighted, collisions=True
  )
  before = codes.copy()
  got, left = cr.deduplicate_codes(table, codes, books, weights, chunk=chunk)
  ref, ref_left = dense.deduplicate_codes(table, codes, books, weights)
  np.testing.assert_array_equal(codes, before)  # the input is not modified
  assert got.dtype == codes.dtype and left == ref_left
  np.testing.assert_array_equal(got, ref)


def test_deduplicate_codes_with_wide_codes():
  """Codes of several bytes per codebook (K > 256) group and move the same way."""
  table, codes, books, _ = _problem(9, v=300, m=2, k=300, d=4)
  codes = codes.astype(np.uint16)
  codes[1:100] = (299, 257)
  got, left = cr.deduplicate_codes(table, codes, books, chunk=33)
  ref, ref_left = dense.deduplicate_codes(table, codes, books)
  assert left == ref_left == 0
  np.testing.assert_array_equal(got, ref)


def test_chunk_must_be_positive():
  table, codes, books, _ = _problem(0)
  with pytest.raises(ValueError, match="chunk"):
    cr.reconstruct(codes, books, chunk=0)
