"""SASRec-style causal transformer session encoder (docs/method.md §2.1-2.2).

Post-LN blocks as in RecBole's SASRec: multi-head causal self-attention with a
key-padding mask, residual + LayerNorm, GELU feed-forward, residual + LayerNorm.
The encoder takes item *embeddings*, not ids, so the teacher (full table) and
the student (compositional codes) share it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ccrec.models.initializers import Initializer

# Finite (not -inf) so that a query row with no valid key (a padding position)
# gives a uniform softmax instead of NaN; such rows are masked downstream.
_MASK_VALUE = -1e9


def causal_mask(mask: jax.Array) -> jax.Array:
  """[B, L] validity -> [B, 1, L, L] attention mask (query t sees valid keys <= t)."""
  length = mask.shape[-1]
  tril = jnp.tril(jnp.ones((length, length), dtype=bool))
  return tril[None, None] & mask[:, None, None, :].astype(bool)


class TransformerBlock(nn.Module):
  """One post-LN transformer block with causal multi-head self-attention."""

  features: int
  num_heads: int
  inner: int
  dropout: float
  attn_dropout: float
  kernel_init: Initializer
  layer_norm_eps: float = 1e-12

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    """x: [B, L, d], mask: [B, L] bool -> [B, L, d]."""
    b, length, d = x.shape
    if d % self.num_heads:
      raise ValueError(f"model.d={d} is not divisible by model.num_heads={self.num_heads}")
    head = d // self.num_heads
    dense = lambda n, name: nn.Dense(n, kernel_init=self.kernel_init, name=name)
    split = lambda t: t.reshape(b, length, self.num_heads, head)
    q = split(dense(d, "query")(x))
    k = split(dense(d, "key")(x))
    v = split(dense(d, "value")(x))
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) / jnp.sqrt(head).astype(x.dtype)
    logits = jnp.where(causal_mask(mask), logits, _MASK_VALUE)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = nn.Dropout(self.attn_dropout)(weights, deterministic=deterministic)
    attn = jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, length, d)
    attn = nn.Dropout(self.dropout)(dense(d, "out")(attn), deterministic=deterministic)
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, name="ln_attn")(x + attn)
    ff = jax.nn.gelu(dense(self.inner, "ff_in")(x), approximate=False)
    ff = nn.Dropout(self.dropout)(dense(d, "ff_out")(ff), deterministic=deterministic)
    return nn.LayerNorm(epsilon=self.layer_norm_eps, name="ln_ff")(x + ff)


class SessionEncoder(nn.Module):
  """Item embeddings of a left-aligned session -> contextual states.

  Attributes:
    features: d.
    num_blocks, num_heads, inner: transformer sizes.
    dropout: hidden dropout; attn_dropout: dropout on attention weights.
    max_len: number of learned positions.
  """

  features: int
  num_blocks: int
  num_heads: int
  inner: int
  dropout: float
  attn_dropout: float
  max_len: int
  kernel_init: Initializer
  layer_norm_eps: float = 1e-12

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """x: [B, L, d] item embeddings, mask: [B, L] -> h: [B, L, d] (zero at padding)."""
    length = x.shape[1]
    if length > self.max_len:
      raise ValueError(f"sequence length {length} exceeds model.max_len={self.max_len}")
    positions = nn.Embed(
        self.max_len, self.features, embedding_init=self.kernel_init, name="position"
    )(jnp.arange(length))
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, name="ln_in")(x + positions[None])
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    for i in range(self.num_blocks):
      x = TransformerBlock(
          self.features,
          self.num_heads,
          self.inner,
          self.dropout,
          self.attn_dropout,
          self.kernel_init,
          self.layer_norm_eps,
          name=f"block_{i}",
      )(x, mask, deterministic)
    return x * mask[..., None].astype(x.dtype)
