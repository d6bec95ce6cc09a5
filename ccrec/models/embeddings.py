"""The full item-embedding table (the teacher's).

Every item embedding module in ccrec has the same three methods:
  lookup(ids [...]) -> [..., d]     (padding id 0 -> zero vector)
  table() -> [V + 1, d]             (row 0 zero)
  score(s [B, d], ids [N] | None) -> [B, N] or [B, V + 1] (column 0 -inf)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ccrec.models.initializers import Initializer


def mask_padding_column(logits: jax.Array) -> jax.Array:
  """[B, V + 1] -> the same with column 0 (padding) set to -inf."""
  return logits.at[:, 0].set(-jnp.inf)


class ItemTable(nn.Module):
  """A trainable [V + 1, d] table; row 0 is padding."""

  num_items: int
  features: int
  embedding_init: Initializer

  def setup(self):
    self.embedding = self.param(
        "embedding", self.embedding_init, (self.num_items + 1, self.features)
    )

  def lookup(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding, ids, axis=0) * (ids > 0)[..., None].astype(self.embedding.dtype)

  def table(self) -> jax.Array:
    return self.embedding.at[0].set(0.0)

  def score(self, s: jax.Array, ids: jax.Array | None = None) -> jax.Array:
    if ids is None:
      return mask_padding_column(s @ self.embedding.T)
    return s @ jnp.take(self.embedding, ids, axis=0).T

  def __call__(self, ids: jax.Array) -> jax.Array:
    return self.lookup(ids)


def with_item_table(variables: dict, table: np.ndarray) -> dict:
  """A table model's variables with its item table replaced by `table` [V+1, d], in the
  original table's layout (item-sharded or replicated, one process or several)."""
  original = variables["params"]["items"]["embedding"]
  table = np.asarray(table, original.dtype)
  if table.shape != original.shape:
    raise ValueError(
        f"item table of shape {list(table.shape)} for a teacher table of shape "
        f"{list(original.shape)}"
    )
  if isinstance(original, jax.Array):
    embedding = jax.make_array_from_callback(table.shape, original.sharding, lambda i: table[i])
  else:  # host arrays stay on the host
    embedding = table
  params = dict(variables["params"], items=dict(variables["params"]["items"], embedding=embedding))
  return dict(variables, params=params)
