"""Compositional-code item embeddings (docs/method.md §3, §8).

Item v has a code (c_v^1..c_v^M), c_v^m in {0..K-1}, and embedding
e_v = sum_m C_m[c_v^m] with codebooks C [M, K, d]. The codes are integers
(uint8 when K <= 256, else uint16) in the non-trainable variable collection
'codes' (variables["codes"][...]["codes"], [V+1, M]); the codebooks are the
param 'codebooks'. An optimizer over variables["params"] never sees the codes.

Same interface as `ItemTable` (embeddings.py): lookup / table / score. `score`
never builds the [V+1, d] table: T[b, m, k] = <s_b, C_m[k]> (B*M*K dot
products), then score[b, v] = sum_m T[b, m, c_v^m] (M look-ups per item).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ccrec.item_layout import code_dtype
from ccrec.models.initializers import CODEBOOK_INIT, Initializer


def random_codes(
    key: jax.Array, num_items: int, num_codebooks: int, codebook_size: int
) -> jax.Array:
  """Uniform random codes [V+1, M] of `code_dtype(K)`, row 0 (padding) all zero."""
  codes = jax.random.randint(key, (num_items + 1, num_codebooks), 0, codebook_size)
  return codes.at[0].set(0).astype(code_dtype(codebook_size))


def compression_stats(
    num_items: int, num_codebooks: int, codebook_size: int, features: int
) -> dict[str, float]:
  """Sizes of the item representation.

  Returns:
    codes_bytes: (V+1) * M * itemsize (uint8/uint16);
    codebook_bytes: M * K * d * 4 (float32);
    compressed_bytes: their sum;
    table_bytes: (V+1) * d * 4, the fp32 table it replaces;
    paper_ratio: V d / (M K d + M V), the paper's CR (each code one unit);
    bytes_ratio: table_bytes / compressed_bytes.
  """
  v, m, k, d = num_items, num_codebooks, codebook_size, features
  codes_bytes = (v + 1) * m * code_dtype(k).itemsize
  codebook_bytes = m * k * d * 4
  table_bytes = (v + 1) * d * 4
  return {
      "codes_bytes": float(codes_bytes),
      "codebook_bytes": float(codebook_bytes),
      "compressed_bytes": float(codes_bytes + codebook_bytes),
      "table_bytes": float(table_bytes),
      "paper_ratio": v * d / (m * k * d + m * v),
      "bytes_ratio": table_bytes / (codes_bytes + codebook_bytes),
  }


def set_codes(
    variables: dict[str, Any], codes: Any, codebooks: Any | None = None
) -> dict[str, Any]:
  """Returns `variables` with the (single) 'codes' variable replaced by `codes`.

  Works for a CompositionalEmbedding at any depth of a model: the leaf
  variables["codes"][*path, "codes"] is replaced (shape checked, cast to its
  dtype) and, if `codebooks` [M, K, d] is given, so is
  variables["params"][*path, "codebooks"]. Nothing is modified in place.

  Args:
    variables: {"params": ..., "codes": ..., ...} as returned by `init`.
    codes: [V+1, M] integer codes, row 0 = padding.
    codebooks: optional [M, K, d] float codebooks.
  """
  flat = traverse_util.flatten_dict(dict(variables["codes"]))
  paths = [p for p in flat if p[-1] == "codes"]
  if len(paths) != 1:
    raise ValueError(f"expected exactly one 'codes' variable, found {paths}")
  path = paths[0]
  old = flat[path]
  codes = np.asarray(codes)
  if codes.shape != tuple(old.shape):
    raise ValueError(f"codes have shape {codes.shape}, the model expects {tuple(old.shape)}")
  if codes.min(initial=0) < 0:
    raise ValueError("codes must be non-negative")
  flat[path] = jnp.asarray(codes.astype(old.dtype))
  out = dict(variables, codes=traverse_util.unflatten_dict(flat))
  if codebooks is not None:
    params = traverse_util.flatten_dict(dict(variables["params"]))
    key = path[:-1] + ("codebooks",)
    if key not in params:
      raise ValueError(f"no param {'/'.join(key)} beside the codes")
    if tuple(np.shape(codebooks)) != tuple(params[key].shape):
      raise ValueError(
          f"codebooks have shape {np.shape(codebooks)}, the model expects "
          f"{tuple(params[key].shape)}"
      )
    params[key] = jnp.asarray(codebooks, params[key].dtype)
    out["params"] = traverse_util.unflatten_dict(params)
  return out


class CompositionalEmbedding(nn.Module):
  """Item embeddings e_v = sum_m C_m[c_v^m]; padding id 0 -> zero vector.

  Attributes:
    num_items: V (ids 1..V; 0 is padding).
    num_codebooks: M.
    codebook_size: K.
    features: d.
    codebook_init: initializer of the [M, K, d] codebooks.
  """

  num_items: int
  num_codebooks: int
  codebook_size: int
  features: int
  codebook_init: Initializer = CODEBOOK_INIT

  def setup(self):
    m, k, d = self.num_codebooks, self.codebook_size, self.features
    self.codebooks = self.param("codebooks", self.codebook_init, (m, k, d))
    # Random codes at init (from the 'params' stream); replaced by learned ones
    # with `set_codes`. Never a float one-hot.
    self.codes = self.variable(
        "codes", "codes", lambda: random_codes(self.make_rng("params"), self.num_items, m, k)
    )

  def _codes(self, ids: jax.Array | None) -> jax.Array:
    """int32 [N, M] codes of ids [N] (all V+1 rows when ids is None)."""
    codes = self.codes.value
    if ids is not None:
      codes = jnp.take(codes, ids, axis=0)
    return codes.astype(jnp.int32)

  def lookup(self, ids: jax.Array) -> jax.Array:
    """ids int [...] -> [..., d]; id 0 -> zeros."""
    codes = jnp.take(self.codes.value, ids, axis=0).astype(jnp.int32)  # [..., M]
    emb = sum(
        jnp.take(self.codebooks[m], codes[..., m], axis=0) for m in range(self.num_codebooks)
    )  # [..., d]
    return emb * (ids > 0)[..., None].astype(emb.dtype)

  def table(self) -> jax.Array:
    """[V+1, d], row 0 zero. Materialises the table: for export/mixup, not scoring."""
    return self.lookup(jnp.arange(self.num_items + 1))

  def code_tables(self, s: jax.Array) -> jax.Array:
    """s [B, d] -> T [B, M, K], T[b, m, k] = <s_b, C_m[k]>."""
    return jnp.einsum("bd,mkd->bmk", s, self.codebooks)

  def score(self, s: jax.Array, ids: jax.Array | None = None) -> jax.Array:
    """s [B, d] -> [B, N] scores <s_b, e_v> of ids [N] via code tables.

    ids None: all V+1 ids, column 0 (padding) = -inf. An explicit id 0 scores 0
    (its embedding is zero).
    """
    t = self.code_tables(s)  # [B, M, K]
    codes = self._codes(ids)  # [N, M]
    scores = sum(
        jnp.take(t[:, m], codes[:, m], axis=1) for m in range(self.num_codebooks)
    )  # [B, N]
    if ids is None:
      return scores.at[:, 0].set(-jnp.inf)
    return jnp.where((ids > 0)[None, :], scores, 0.0)

  def __call__(self, ids: jax.Array) -> jax.Array:
    return self.lookup(ids)
