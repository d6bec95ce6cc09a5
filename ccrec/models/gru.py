"""GRU4Rec session encoder (Hidasi et al. 2016; RecBole's GRU4Rec layout).

Item embeddings -> dropout -> `num_layers` GRU layers of `hidden` units -> a dense
projection hidden -> d, giving one state per position. The GRU is causal, so the state
at position t depends on clicks 0..t only: the `last` readout reads a session (and its
causal form every prefix, the window objective), and the hot/cold views read the state at
the last hot (cold) click, as for the transformer. Sessions are left-aligned, so padding
comes after every click and changes no state that a readout reads.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from ccrec.models.initializers import Initializer


class GRUEncoder(nn.Module):
  """Item embeddings of a left-aligned session -> per-position states [B, L, d].

  Attributes:
    features: d (the item embedding and output size).
    hidden: GRU units per layer.
    num_layers: stacked GRU layers.
    dropout: dropout on the item embeddings.
    kernel_init: initialiser of the input kernels and the projection.
  """

  features: int
  hidden: int
  num_layers: int
  dropout: float
  kernel_init: Initializer

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """x: [B, L, d] item embeddings, mask: [B, L] -> h: [B, L, d] (zero at padding)."""
    h = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    for i in range(self.num_layers):
      cell = nn.GRUCell(self.hidden, kernel_init=self.kernel_init, name=f"gru_{i}")
      h = nn.RNN(cell, name=f"rnn_{i}")(h)
    h = nn.Dense(self.features, kernel_init=self.kernel_init, name="project")(h)
    return h * mask[..., None].astype(h.dtype)
