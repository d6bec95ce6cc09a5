"""Scoring every item and selecting the top k, in numpy (docs/method.md §8).

- `CodeScorer`: compositional codes. For a session vector s, T[m, k] =
  <s, C_m[k]> (M*K dot products), then score(v) = sum_m T[m, codes[m, v]]
  (M look-ups per item). It reads the [M, V+1] code bytes once and never
  builds the [V+1, d] table. Codes are kept codebook-major ([M, V+1]
  contiguous) and processed a chunk of items at a time, so the per-chunk
  index buffer and partial sums stay in cache. `CodeScorer.top_k` with
  pruned=True scores only the code groups whose upper bound can reach the top
  k (`ccrec.serving.pruned`), with the full scan's result.
- `TableScorer`: a materialised [V+1, d] table (the teacher's, a student's
  materialised table, a cached TT table): one matrix-vector product.
- `TTScorer`: tensor-train cores; rebuilds every item's row on each call, as
  an on-device TT model does (in chunks of the leading TT digit, so memory
  stays at one chunk of rows), or caches the table once.
- `top_k` / `top_k_columns`: exact top k, ties broken by the smaller id, with
  a block-maximum prefilter (one pass over the scores, then a partial sort of
  the few blocks that can hold the top k).

All scorers return float32 scores for ids 0..V with column 0 (padding) = -inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ccrec.item_layout import tt_digits
from ccrec.serving.pruned import PrunedIndex
from ccrec.serving.topk import top_k, top_k_columns  # noqa: F401  (scoring.top_k)

_NEG_INF = np.float32(-np.inf)


def code_tables(s: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
  """s [B, d], codebooks [M, K, d] -> T [B, M, K] float32, T[b, m, k] = <s_b, C_m[k]>."""
  m, k, d = codebooks.shape
  return (s @ codebooks.reshape(m * k, d).T).reshape(len(s), m, k)


class CodeScorer:
  """Scores through per-codebook tables.

  Args:
    codes: uint8/uint16 [M, V+1], codebook-major; column 0 is padding.
    codebooks: float32 [M, K, d] (dequantised if the bundle stores int8).
    chunk: items per chunk (single session); batches use chunk // B (>= 1024).
    pruned: `top_k` skips the items that cannot enter the top k (`ccrec.serving.pruned`;
      the same result as the full scan, after building an index of the codes).
  """

  def __init__(
      self, codes: np.ndarray, codebooks: np.ndarray, chunk: int = 1 << 16, pruned: bool = False
  ):
    codes = np.ascontiguousarray(codes)
    if codes.ndim != 2 or codes.shape[0] != codebooks.shape[0]:
      raise ValueError(f"codes {codes.shape} do not match codebooks {codebooks.shape}")
    if codes.size and int(codes.max()) >= codebooks.shape[1]:
      raise ValueError(f"codes hold {int(codes.max())} >= K={codebooks.shape[1]}")
    self.codes = codes
    self.codebooks = np.ascontiguousarray(codebooks, dtype=np.float32)
    self.chunk = int(chunk)
    self.num_rows = codes.shape[1]
    self.index = None
    if pruned:
      self.index = PrunedIndex(codes, codebooks.shape[1])

  def lookup(self, ids: np.ndarray) -> np.ndarray:
    """ids int [...] in 0..V -> [..., d]; id 0 -> zeros."""
    ids = np.asarray(ids)
    out = sum(self.codebooks[m][self.codes[m][ids]] for m in range(len(self.codebooks)))
    return out * (ids > 0)[..., None].astype(np.float32)

  def table(self) -> np.ndarray:
    """The materialised [V+1, d] table (row 0 zero): for comparisons, never used to score."""
    return self.lookup(np.arange(self.num_rows))

  def score(self, s: np.ndarray) -> np.ndarray:
    """s [d] -> float32 [V+1]."""
    t = code_tables(np.asarray(s, np.float32)[None], self.codebooks)[0]  # [M, K]
    n, chunk = self.num_rows, self.chunk
    out = np.empty(n, np.float32)
    part = np.empty(min(chunk, n), np.float32)
    index = np.empty(min(chunk, n), np.intp)
    for lo in range(0, n, chunk):
      hi = min(lo + chunk, n)
      o, p, idx = out[lo:hi], part[: hi - lo], index[: hi - lo]
      # Casting the chunk's codes to intp once makes np.take's fast path apply
      # (uint8 indices take a slow converting loop); 'wrap' skips bounds checks
      # (codes < K was checked at construction).
      np.copyto(idx, self.codes[0, lo:hi], casting="unsafe")
      np.take(t[0], idx, out=o, mode="wrap")
      for m in range(1, len(t)):
        np.copyto(idx, self.codes[m, lo:hi], casting="unsafe")
        np.take(t[m], idx, out=p, mode="wrap")
        o += p
    out[0] = _NEG_INF
    return out

  def score_columns(self, s: np.ndarray) -> np.ndarray:
    """s [B, d] -> float32 [V+1, B] (item-major).

    Per codebook the table is laid out [K, B], so each code selects one
    contiguous row of B scores: B times fewer, B times longer gathers than
    gathering per session.
    """
    t = code_tables(np.asarray(s, np.float32), self.codebooks)  # [B, M, K]
    b, n = len(t), self.num_rows
    chunk = max(256, (self.chunk * 4) // max(b, 1))
    out = np.empty((n, b), np.float32)
    part = np.empty((min(chunk, n), b), np.float32)
    index = np.empty(min(chunk, n), np.intp)
    tables = [np.ascontiguousarray(t[:, m].T) for m in range(t.shape[1])]  # M x [K, B]
    for lo in range(0, n, chunk):
      hi = min(lo + chunk, n)
      o, p, idx = out[lo:hi], part[: hi - lo], index[: hi - lo]
      np.copyto(idx, self.codes[0, lo:hi], casting="unsafe")
      np.take(tables[0], idx, axis=0, out=o, mode="wrap")
      for m in range(1, len(tables)):
        np.copyto(idx, self.codes[m, lo:hi], casting="unsafe")
        np.take(tables[m], idx, axis=0, out=p, mode="wrap")
        o += p
    out[0] = _NEG_INF
    return out

  def top_k(
      self, s: np.ndarray, k: int, exclude: np.ndarray | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """`top_k(score(s), k)` with the `exclude` ids scored -inf: through the pruned search
    when the scorer was built with pruned=True, else the full scan."""
    if self.index is not None:
      t = code_tables(np.asarray(s, np.float32)[None], self.codebooks)[0]
      return self.index.top_k(t, k, exclude)
    scores = self.score(s)
    if exclude is not None and len(exclude):
      scores[np.asarray(exclude, np.int64)] = _NEG_INF
    return top_k(scores, k)


class TableScorer:
  """Scores against a materialised float32 [V+1, d] table."""

  def __init__(self, table: np.ndarray):
    self.table_ = np.ascontiguousarray(table, dtype=np.float32)
    self.num_rows = len(self.table_)

  def lookup(self, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    return self.table_[ids] * (ids > 0)[..., None].astype(np.float32)

  def table(self) -> np.ndarray:
    return self.table_

  def score(self, s: np.ndarray) -> np.ndarray:
    out = self.table_ @ np.asarray(s, np.float32)
    out[0] = _NEG_INF
    return out

  def score_columns(self, s: np.ndarray) -> np.ndarray:
    """s [B, d] -> float32 [V+1, B]."""
    out = self.table_ @ np.asarray(s, np.float32).T
    out[0] = _NEG_INF
    return out


# ---------------------------------------------------------------------------- tensor train


def tt_rows(
    cores: Sequence[np.ndarray], item_factors: Sequence[int], rows: np.ndarray
) -> np.ndarray:
  """rows int [N] -> float32 [N, d], contracting the cores for those rows only."""
  digits = tt_digits(np.asarray(rows, np.int64), item_factors)
  out = cores[0][0][digits[0]]  # [N, d1, r1]
  for core, digit in zip(cores[1:], digits[1:], strict=True):
    g = core[:, digit].transpose(1, 0, 2, 3)  # [N, r, dk, r']
    out = np.einsum("nar,nrbs->nabs", out, g)
    out = out.reshape(out.shape[0], -1, out.shape[-1])
  return out[..., 0].astype(np.float32)


def _tt_suffix(cores: Sequence[np.ndarray]) -> np.ndarray:
  """The rows of cores 1..K-1 for every digit combination: [P', D', r_1] (P' = prod n_2..n_K)."""
  last = cores[-1]  # [r, n, e, 1]
  acc = last[..., 0].transpose(1, 2, 0)  # [n, e, r]
  for core in reversed(cores[1:-1]):  # [r0, n, e, r]
    r0, n, e, r = core.shape
    p, dd, _ = acc.shape
    # new[(i, P), (j, D), r0] = sum_r core[r0, i, j, r] acc[P, D, r]
    x = core.transpose(1, 2, 0, 3).reshape(n * e * r0, r) @ acc.reshape(p * dd, r).T
    acc = x.reshape(n, e, r0, p, dd).transpose(0, 3, 1, 4, 2).reshape(n * p, e * dd, r0)
  return np.ascontiguousarray(acc)


class TTScorer:
  """Scores with tensor-train cores.

  rebuild (cache=False): each call rebuilds all V+1 rows from the cores
  (V*d*r_1 multiply-adds after a small suffix contraction), a leading digit
  at a time, and scores them: what an on-device TT model does, since it
  cannot keep the table. cache=True builds the table once and scores like
  `TableScorer` (fast, but holds the full fp32 table).
  """

  def __init__(
      self,
      cores: Sequence[np.ndarray],
      item_factors: Sequence[int],
      num_rows: int,
      cache: bool = False,
  ):
    self.cores = [np.ascontiguousarray(c, dtype=np.float32) for c in cores]
    self.item_factors = tuple(int(n) for n in item_factors)
    self.num_rows = int(num_rows)
    self.d = math.prod(c.shape[2] for c in self.cores)
    self._table: np.ndarray | None = None
    if cache:
      self._table = self.table()

  def lookup(self, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if self._table is not None:
      return self._table[ids] * (ids > 0)[..., None].astype(np.float32)
    rows = tt_rows(self.cores, self.item_factors, ids.reshape(-1))
    return (rows * (ids.reshape(-1) > 0)[:, None]).reshape(*ids.shape, self.d)

  def _blocks(self):
    """Yields (first_row, rows [P', d]) for each value of the leading digit."""
    if len(self.cores) == 1:
      yield 0, self.cores[0][0, : self.num_rows, :, 0]
      return
    suffix = _tt_suffix(self.cores)  # [P', D', r1]
    p, dd, r1 = suffix.shape
    flat = suffix.reshape(p * dd, r1)
    first = self.cores[0][0]  # [n1, d1, r1]
    for i in range(min(first.shape[0], -(-self.num_rows // p))):
      block = (flat @ first[i].T).reshape(p, dd, -1).transpose(0, 2, 1).reshape(p, -1)
      yield i * p, block

  def table(self) -> np.ndarray:
    """float32 [V+1, d], row 0 zero."""
    if self._table is not None:
      return self._table
    out = np.empty((self.num_rows, self.d), np.float32)
    for lo, rows in self._blocks():
      n = min(len(rows), self.num_rows - lo)
      out[lo : lo + n] = rows[:n]
    out[0] = 0.0
    return out

  def score(self, s: np.ndarray) -> np.ndarray:
    return self.score_columns(np.asarray(s, np.float32)[None])[:, 0]

  def score_columns(self, s: np.ndarray) -> np.ndarray:
    """s [B, d] -> float32 [V+1, B]."""
    st = np.asarray(s, np.float32).T
    if self._table is not None:
      out = self._table @ st
    else:
      out = np.empty((self.num_rows, st.shape[1]), np.float32)
      for lo, rows in self._blocks():
        n = min(len(rows), self.num_rows - lo)
        out[lo : lo + n] = rows[:n] @ st
    out[0] = _NEG_INF
    return out
