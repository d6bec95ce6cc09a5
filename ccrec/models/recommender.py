"""SessionRecommender: item embeddings + session encoder + readout + scoring.

One transformer pass gives everything a training step needs: the session
vector (readout of the whole session), the block outputs (from which the
distillation heads read the hot and cold views) and optionally the
per-position causal readouts (all-positions training).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ccrec.config import ENCODERS, GRU_ENCODERS
from ccrec.models.codes import CompositionalEmbedding
from ccrec.models.embeddings import ItemTable, mask_padding_column
from ccrec.models.encoder import SessionEncoder
from ccrec.models.gru import GRUEncoder
from ccrec.models.initializers import make_initializer
from ccrec.models.readout import make_readout
from ccrec.models.tt import TTEmbedding


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Static, hashable description of a recommender (built from config.model)."""

  num_items: int
  d: int = 64
  num_blocks: int = 2
  num_heads: int = 2
  inner: int = 256
  dropout: float = 0.5
  attn_dropout: float = 0.5
  max_len: int = 50
  encoder: str = "transformer"  # 'transformer' | 'gru4rec' | 'narm'
  gru_hidden: int = 128  # (encoder='gru4rec' or 'narm')
  gru_layers: int = 1  # (encoder='gru4rec' or 'narm')
  readout: str = "soft_attention"
  readout_dropout: float = 0.0  # (readout='narm')
  init: str = "truncated_normal"
  init_scale: float = 0.02
  layer_norm_eps: float = 1e-12
  embedding: str = "table"  # 'table' | 'codes' | 'tt'
  num_codebooks: int = 4  # M (embedding='codes')
  codebook_size: int = 32  # K (embedding='codes')
  tt_rank: int = 8  # (embedding='tt')

  @classmethod
  def from_config(cls, model_config: Any, num_items: int, **overrides) -> "ModelSpec":
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in dict(model_config).items() if k in fields}
    values.update(overrides)
    values["num_items"] = num_items
    return cls(**values)


def _make_embedding(spec: ModelSpec, init) -> nn.Module:
  if spec.embedding == "table":
    return ItemTable(spec.num_items, spec.d, init, name="items")
  if spec.embedding == "codes":
    return CompositionalEmbedding(
        spec.num_items, spec.num_codebooks, spec.codebook_size, spec.d, init, name="items"
    )
  if spec.embedding == "tt":
    return TTEmbedding(num_items=spec.num_items, features=spec.d, rank=spec.tt_rank, name="items")
  raise ValueError(f"model.embedding must be 'table', 'codes' or 'tt', got {spec.embedding!r}")


def _make_encoder(spec: ModelSpec, init) -> nn.Module:
  """The session encoder: item embeddings [B, L, d] + mask -> per-position states [B, L, d]."""
  if spec.encoder == "transformer":
    return SessionEncoder(
        spec.d,
        spec.num_blocks,
        spec.num_heads,
        spec.inner,
        spec.dropout,
        spec.attn_dropout,
        spec.max_len,
        init,
        spec.layer_norm_eps,
        name="encoder",
    )
  if spec.encoder in GRU_ENCODERS:  # NARM: this GRU encoder + the 'narm' readout
    return GRUEncoder(spec.d, spec.gru_hidden, spec.gru_layers, spec.dropout, init, name="encoder")
  raise ValueError(f"model.encoder must be one of {ENCODERS}, got {spec.encoder!r}")


class SessionRecommender(nn.Module):
  """Scores every item as the next click of a left-aligned session."""

  spec: ModelSpec

  def setup(self):
    s = self.spec
    init = make_initializer(s.init, s.init_scale)
    self.items = _make_embedding(s, init)
    self.encoder = _make_encoder(s, init)
    self.readout = make_readout(s.readout, s.d, init, name="readout", dropout=s.readout_dropout)

  def __call__(
      self,
      items: jax.Array,
      *,
      deterministic: bool = True,
      table: jax.Array | None = None,
      all_positions: bool = False,
  ) -> dict[str, jax.Array]:
    """Encodes a batch of sessions.

    Args:
      items: int32 [B, L] left-aligned item ids, 0 = padding.
      deterministic: False enables dropout (needs the 'dropout' rng).
      table: optional [V + 1, d] table replacing the model's own item embeddings
        (the student's mixup table during training).
      all_positions: also return the causal readout of every position.

    Returns:
      dict with 'session' [B, d] (readout of the whole session), 'hidden'
      [B, L, d] (block outputs), 'mask' [B, L] and, if all_positions,
      'positions' [B, L, d].
    """
    mask = items > 0
    x = self.lookup(items, table)
    h = self.encoder(x, mask, deterministic=deterministic)
    out = {"session": self.readout(h, mask, deterministic), "hidden": h, "mask": mask}
    if all_positions:
      out["positions"] = self.readout.causal(h, mask, deterministic)
    return out

  def lookup(self, ids: jax.Array, table: jax.Array | None = None) -> jax.Array:
    if table is None:
      return self.items.lookup(ids)
    return jnp.take(table, ids, axis=0) * (ids > 0)[..., None].astype(table.dtype)

  def score(
      self, s: jax.Array, ids: jax.Array | None = None, table: jax.Array | None = None
  ) -> jax.Array:
    """s: [B, d] -> [B, N] scores of `ids` (or [B, V + 1] of all, padding -inf)."""
    if table is None:
      return self.items.score(s, ids)
    if ids is None:
      return mask_padding_column(s @ table.T)
    return s @ jnp.take(table, ids, axis=0).T

  def table(self) -> jax.Array:
    """The [V + 1, d] item table this model scores against (materialised)."""
    return self.items.table()


def init_variables(model: SessionRecommender, key: jax.Array) -> dict:
  """Initialises all variable collections (params, and codes for the student)."""
  spec = model.spec
  items = jnp.zeros((1, spec.max_len), jnp.int32).at[0, 0].set(1)
  params_key, dropout_key = jax.random.split(key)
  init = jax.jit(lambda k1, k2: model.init({"params": k1, "dropout": k2}, items))
  return dict(init(params_key, dropout_key))
