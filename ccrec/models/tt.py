"""Tensor-train item embeddings, the OD-Rec / TT-Rec baseline (docs/method.md intro, §6).

The V+1 item rows are indexed by mixed-radix digits (i_1..i_K) with radices
item_factors = (n_1..n_K), prod n_k >= V+1 (row = sum_k i_k * prod_{j>k} n_j,
most significant digit first); the embedding dimension is factored as
d = d_1 * ... * d_K. Cores G_k have shape [r_{k-1}, n_k, d_k, r_k] with
r_0 = r_K = 1, and

  E[row, (j_1..j_K)] = G_1[:, i_1, j_1, :] @ G_2[:, i_2, j_2, :] @ ... @ G_K[:, i_K, j_K, :]

(j row-major). Rows >= V+1 of the implicit tensor are never computed or used.
Same interface as `ItemTable`: lookup / table / score. The factorisations, core shapes
and digits are `ccrec.item_layout`'s (the numpy runtime shares them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ccrec.item_layout import Ranks, auto_item_factors, factorize_exact, tt_core_shapes, tt_digits


def tt_num_params(item_factors: Sequence[int], d_factors: Sequence[int], rank: Ranks) -> int:
  """sum_k r_{k-1} n_k d_k r_k."""
  return sum(math.prod(shape) for shape in tt_core_shapes(item_factors, d_factors, rank))


def tt_bytes(num_items: int, features: int, rank: Ranks, num_factors: int = 3) -> dict[str, float]:
  """Sizes with the default factorisations (as TTEmbedding chooses them).

  Returns: num_params, compressed_bytes (fp32 cores), table_bytes ((V+1) d fp32),
  paper_ratio (V d / num_params), bytes_ratio (table_bytes / compressed_bytes).
  """
  item_factors = auto_item_factors(num_items + 1, num_factors)
  d_factors = factorize_exact(features, num_factors)
  params = tt_num_params(item_factors, d_factors, rank)
  table = (num_items + 1) * features * 4
  return {
      "num_params": float(params),
      "compressed_bytes": float(4 * params),
      "table_bytes": float(table),
      "paper_ratio": num_items * features / params,
      "bytes_ratio": table / (4 * params),
  }


class TTEmbedding(nn.Module):
  """Tensor-train item table; padding id 0 -> zero vector.

  Attributes:
    num_items: V (ids 1..V; 0 is padding).
    features: d.
    rank: TT rank, one int for every internal rank or a tuple of K-1 ranks.
    item_factors: radices (n_1..n_K), prod >= V+1; None: auto_item_factors(V+1, num_factors).
    d_factors: (d_1..d_K), prod == d; None: factorize_exact(d, K).
    num_factors: K when item_factors is None.
    embedding_std: target std of the reconstructed entries at init (each core
      is N(0, sigma^2) with sigma^(2K) * prod(ranks) = embedding_std^2).
  """

  num_items: int
  features: int
  rank: Ranks = 8
  item_factors: tuple[int, ...] | None = None
  d_factors: tuple[int, ...] | None = None
  num_factors: int = 3
  embedding_std: float = 0.05

  def factors(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(item_factors, d_factors) after defaults, validated."""
    items = tuple(self.item_factors or auto_item_factors(self.num_items + 1, self.num_factors))
    dims = tuple(self.d_factors or factorize_exact(self.features, len(items)))
    if math.prod(items) < self.num_items + 1:
      raise ValueError(f"item_factors {items} cover {math.prod(items)} < {self.num_items + 1} rows")
    if math.prod(dims) != self.features:
      raise ValueError(f"d_factors {dims} multiply to {math.prod(dims)}, not {self.features}")
    return items, dims

  def setup(self):
    items, dims = self.factors()
    shapes = tt_core_shapes(items, dims, self.rank)
    internal = math.prod(shape[-1] for shape in shapes[:-1])
    sigma = (self.embedding_std**2 / internal) ** (1.0 / (2 * len(shapes)))
    init = nn.initializers.normal(stddev=sigma)
    self.cores = [self.param(f"core_{k}", init, shape) for k, shape in enumerate(shapes)]

  def _rows(self, rows: jax.Array) -> jax.Array:
    """rows int [N] -> [N, d] by contracting the cores for those rows only."""
    digits = tt_digits(rows, self.factors()[0])
    out = jnp.take(self.cores[0][0], digits[0], axis=0)  # [N, d_1, r_1]
    for core, digit in zip(self.cores[1:], digits[1:]):
      g = jnp.take(core, digit, axis=1)  # [r, N, d_k, r']
      out = jnp.einsum("nar,rnbs->nabs", out, g)
      out = out.reshape(out.shape[0], -1, out.shape[-1])  # [N, D*d_k, r']
    return out[..., 0]  # [N, d]

  def lookup(self, ids: jax.Array) -> jax.Array:
    """ids int [...] -> [..., d]; id 0 -> zeros."""
    flat = ids.reshape(-1).astype(jnp.int32)
    rows = self._rows(flat) * (flat > 0)[:, None]
    return rows.reshape(*ids.shape, self.features)

  def table(self) -> jax.Array:
    """[V+1, d], row 0 zero."""
    return self.lookup(jnp.arange(self.num_items + 1))

  def score(self, s: jax.Array, ids: jax.Array | None = None) -> jax.Array:
    """s [B, d] -> [B, N] (ids [N]) or [B, V+1] with column 0 = -inf (ids None)."""
    if ids is None:
      return (s @ self.table().T).at[:, 0].set(-jnp.inf)
    return s @ self.lookup(ids).T

  def __call__(self, ids: jax.Array) -> jax.Array:
    return self.lookup(ids)
