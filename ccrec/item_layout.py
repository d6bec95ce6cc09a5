"""How the compressed item representations are laid out, shared by the models and the runtime.

- Compositional codes: the integer dtype of the codes (`code_dtype`).
- Tensor train: the V+1 item rows are indexed by mixed-radix digits (i_1..i_K) with
  radices item_factors = (n_1..n_K), prod n_k >= V+1 (row = sum_k i_k * prod_{j>k} n_j,
  most significant digit first, `tt_digits`); d = d_1 * ... * d_K; core k has shape
  [r_{k-1}, n_k, d_k, r_k] with r_0 = r_K = 1 (`tt_core_shapes`). `auto_item_factors`
  and `factorize_exact` are the default factorisations.

Plain Python and numpy (no jax), so ccrec.models (Flax) and the numpy runtime
(ccrec.serving) use the same definitions. `tt_digits` works on numpy and jax arrays alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Ranks = int | Sequence[int]  # one TT rank for every internal rank, or K-1 of them


def code_dtype(codebook_size: int) -> np.dtype:
  """uint8 when K <= 256, uint16 when K <= 65536."""
  if not 1 <= codebook_size <= 65536:
    raise ValueError(f"codebook_size must be in [1, 65536], got {codebook_size}")
  return np.dtype(np.uint8 if codebook_size <= 256 else np.uint16)


def auto_item_factors(num_rows: int, num_factors: int = 3) -> tuple[int, ...]:
  """Near-equal radices (n_1..n_K) with prod >= num_rows, shrunk while it stays >= num_rows.

  auto_item_factors(1683) == (12, 12, 12); auto_item_factors(1000) == (10, 10, 10).
  """
  if num_rows < 1 or num_factors < 1:
    raise ValueError(f"need num_rows >= 1 and num_factors >= 1, got {num_rows}, {num_factors}")
  base = max(1, round(num_rows ** (1.0 / num_factors)))
  while base**num_factors < num_rows:
    base += 1
  factors = [base] * num_factors
  for i in range(num_factors):
    while factors[i] > 1 and math.prod(factors) // factors[i] * (factors[i] - 1) >= num_rows:
      factors[i] -= 1
  return tuple(sorted(factors, reverse=True))


def factorize_exact(n: int, num_factors: int) -> tuple[int, ...]:
  """n as a product of `num_factors` integers, as balanced as possible (smallest largest
  factor, then largest smallest), in descending order. factorize_exact(128, 3) == (8, 4, 4)."""
  if n < 1 or num_factors < 1:
    raise ValueError(f"need n >= 1 and num_factors >= 1, got {n}, {num_factors}")

  def options(m: int, k: int, cap: int):
    if k == 1:
      if m <= cap:
        yield (m,)
      return
    for f in range(min(m, cap), 0, -1):
      if m % f == 0:
        for rest in options(m // f, k - 1, f):
          yield (f,) + rest

  return min(options(n, num_factors, n), key=lambda fs: (fs[0], -fs[-1]))


def _internal_ranks(rank: Ranks, num_cores: int) -> tuple[int, ...]:
  if isinstance(rank, int):
    return (rank,) * (num_cores - 1)
  rank = tuple(int(r) for r in rank)
  if len(rank) != num_cores - 1:
    raise ValueError(f"{num_cores} cores need {num_cores - 1} internal ranks, got {rank}")
  return rank


def tt_core_shapes(
    item_factors: Sequence[int], d_factors: Sequence[int], rank: Ranks
) -> list[tuple[int, int, int, int]]:
  """Shapes [r_{k-1}, n_k, d_k, r_k] of the cores (r_0 = r_K = 1)."""
  if len(item_factors) != len(d_factors):
    raise ValueError(
        f"item_factors {tuple(item_factors)} and d_factors {tuple(d_factors)} "
        "must have the same length"
    )
  ranks = (1,) + _internal_ranks(rank, len(item_factors)) + (1,)
  return [(ranks[k], n, d, ranks[k + 1]) for k, (n, d) in enumerate(zip(item_factors, d_factors))]


def tt_digits(rows: Any, item_factors: Sequence[int]) -> list[Any]:
  """rows int [N] (numpy or jax) -> K digit arrays [N], most significant first."""
  digits, stride = [], math.prod(item_factors)
  for n in item_factors:
    stride //= n
    digits.append((rows // stride) % n)
  return digits
