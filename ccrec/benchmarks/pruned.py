"""Timing the pruned top-k (ccrec/serving/pruned.py) against the full scan, on synthetic codes.

`clustered_codes` makes codes like learned ones: items fall into clusters whose members
share most of their codewords (a prototype code per cluster, each codeword kept with
probability `keep`, else drawn at random), and the codebooks of a learned model are
stood in for by clustered codeword vectors; learned codes and codebooks can be passed
in instead (launch/benchmark_pruned.py). Queries are noisy item embeddings, as a
session vector lies near the items it predicts. `benchmark` times both paths on the
same queries, checks that they agree, and reports the share of items the pruned
search scored; the numbers belong to the machine they were measured on.

  from ccrec.benchmarks import pruned
  pruned.benchmark(num_items=1_000_000, d=256, num_codebooks=4, codebook_size=256)
"""

from __future__ import annotations

import time

import numpy as np

from ccrec.serving.pruned import PrunedIndex
from ccrec.serving.scoring import CodeScorer, code_tables, top_k


def clustered_codes(
    num_items: int,
    num_codebooks: int,
    codebook_size: int,
    *,
    num_clusters: int = 1024,
    keep: float = 0.8,
    seed: int = 0,
) -> np.ndarray:
  """uint8/uint16 [M, V+1] codes (column 0 zero) whose items cluster as learned codes do."""
  rng = np.random.default_rng(seed)
  dtype = np.uint8 if codebook_size <= 256 else np.uint16
  proto = rng.integers(0, codebook_size, (num_clusters, num_codebooks))
  cluster = rng.integers(0, num_clusters, num_items)
  codes = proto[cluster].T.copy()  # [M, V]
  redraw = rng.random(codes.shape) >= keep
  codes[redraw] = rng.integers(0, codebook_size, int(redraw.sum()))
  return np.concatenate([np.zeros((num_codebooks, 1), np.int64), codes], axis=1).astype(dtype)


def clustered_codebooks(
    num_codebooks: int, codebook_size: int, d: int, *, seed: int = 0, decay: float = 0.7
) -> np.ndarray:
  """float32 [M, K, d] codebooks; codebook m scaled by decay**m (later ones refine)."""
  rng = np.random.default_rng([seed, 1])
  books = rng.normal(size=(num_codebooks, codebook_size, d)) / np.sqrt(d)
  books *= decay ** np.arange(num_codebooks)[:, None, None]
  return books.astype(np.float32)


def benchmark(
    num_items: int = 1_000_000,
    d: int = 256,
    num_codebooks: int = 4,
    codebook_size: int = 256,
    k: int = 10,
    queries: int = 20,
    noise: float = 0.5,
    seed: int = 0,
    clustered: bool = True,
    codes: np.ndarray | None = None,
    books: np.ndarray | None = None,
) -> dict:
  """Seconds per query of the pruned search and of the full scan (`CodeScorer.score` +
  `scoring.top_k`), the mean share of items scored, index build time, and whether every
  query gave identical ids and values.

  codes [M, V+1] and books [M, K, d] (e.g. learned ones) replace the synthetic codes; the
  sizes are then read from them.
  """
  rng = np.random.default_rng([seed, 2])
  if (codes is None) != (books is None):
    raise ValueError("pass both codes and books, or neither")
  if codes is not None:
    num_codebooks, num_items = codes.shape[0], codes.shape[1] - 1
    codebook_size, d = books.shape[1], books.shape[2]
    source = "given"
  elif clustered:
    source = "clustered"
    codes = clustered_codes(num_items, num_codebooks, codebook_size, seed=seed)
  else:
    source = "random"
    codes = rng.integers(0, codebook_size, (num_codebooks, num_items + 1))
    codes[:, 0] = 0
    codes = codes.astype(np.uint8 if codebook_size <= 256 else np.uint16)
  if books is None:
    books = clustered_codebooks(num_codebooks, codebook_size, d, seed=seed)
  scorer = CodeScorer(codes, books)
  start = time.perf_counter()
  index = PrunedIndex(codes, codebook_size)
  build_s = time.perf_counter() - start
  targets = rng.integers(1, num_items + 1, queries)
  s = scorer.lookup(targets) + (noise / np.sqrt(d)) * rng.normal(size=(queries, d))
  s = s.astype(np.float32)
  full_s, pruned_s, scored, same = [], [], [], True
  for q in range(queries):
    start = time.perf_counter()
    want = top_k(scorer.score(s[q]), k)
    full_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    # One row at a time, as CodeScorer.score builds its tables (a batched matmul may round
    # differently in the last bit).
    ids, vals, n = index.search(code_tables(s[q : q + 1], books)[0], k)
    pruned_s.append(time.perf_counter() - start)
    scored.append(n / num_items)
    same &= bool(np.array_equal(ids, want[0]) and np.array_equal(vals, want[1]))
  return {
      "num_items": num_items,
      "d": d,
      "num_codebooks": num_codebooks,
      "codebook_size": codebook_size,
      "k": k,
      "queries": queries,
      "codes": source,
      "full_scan_s_per_query": float(np.mean(full_s)),
      "pruned_s_per_query": float(np.mean(pruned_s)),
      "full_scan_s_median": float(np.median(full_s)),
      "pruned_s_median": float(np.median(pruned_s)),
      "full_scan_s_p95": float(np.percentile(full_s, 95)),
      "pruned_s_p95": float(np.percentile(pruned_s, 95)),
      "index_build_s": build_s,
      "mean_share_scored": float(np.mean(scored)),
      "identical": same,
  }
