"""Session readouts: the soft-attention readout (docs/method.md §2.3), the last position and
NARM's attention readout (§2.5).

Each has two forms: `__call__` reads the whole (left-aligned) session into one
vector; `causal` gives, for every position t, the readout of positions <= t, so
one transformer pass trains on every prefix of a window (SASRec's objective).
With a causal encoder, `causal(h, mask)[:, t]` equals `__call__` on the prefix
ending at t.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ccrec.config import READOUTS
from ccrec.models.initializers import Initializer


def masked_mean(h: jax.Array, mask: jax.Array) -> jax.Array:
  """h: [B, L, d], mask: [B, L] -> [B, d] mean over valid positions (0 if none)."""
  m = mask.astype(h.dtype)[..., None]
  return (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


class SoftAttentionReadout(nn.Module):
  """s = sum_t a_t h_t with a_t = q^T sigmoid(W1 tanh(h_t) + b + W2 m), m = mean of valid h_t.

  The weights a_t are not softmax-normalised (as in the paper and its code).
  """

  features: int
  kernel_init: Initializer

  def setup(self):
    self.w1 = nn.Dense(self.features, use_bias=True, kernel_init=self.kernel_init, name="w1")
    self.w2 = nn.Dense(self.features, use_bias=False, kernel_init=self.kernel_init, name="w2")
    self.q = nn.Dense(1, use_bias=False, kernel_init=self.kernel_init, name="q")

  def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """h: [B, L, d], mask: [B, L] -> s: [B, d]. (`deterministic`: no dropout here.)"""
    del deterministic
    m = masked_mean(h, mask)
    a = self.q(jax.nn.sigmoid(self.w1(jnp.tanh(h)) + self.w2(m)[:, None, :]))[..., 0]
    a = a * mask.astype(h.dtype)
    return jnp.einsum("bl,bld->bd", a, h)

  def causal(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """h: [B, L, d], mask: [B, L] -> [B, L, d]; row t reads positions <= t only.

    Costs O(L^2 d) per session (one sigmoid per (query, key) pair).
    """
    del deterministic
    m = mask.astype(h.dtype)
    counts = jnp.maximum(jnp.cumsum(m, axis=1), 1.0)[..., None]
    running_mean = jnp.cumsum(h * m[..., None], axis=1) / counts  # [B, L, d]
    keys = self.w1(jnp.tanh(h))  # [B, L(j), d]
    queries = self.w2(running_mean)  # [B, L(t), d]
    z = jax.nn.sigmoid(queries[:, :, None, :] + keys[:, None, :, :])  # [B, t, j, d]
    a = self.q(z)[..., 0]  # [B, t, j]
    length = h.shape[1]
    allowed = jnp.tril(jnp.ones((length, length), h.dtype))[None] * m[:, None, :]
    return jnp.einsum("btj,bjd->btd", a * allowed, h)


class LastReadout(nn.Module):
  """Plain SASRec: the state at the last position the mask allows.

  The mask may have gaps (the hot and cold views of `ccrec.models.views` keep only the
  positions holding hot, or cold, items): the readout is the state at the highest allowed
  position, not at `mask.sum() - 1`. A row with no allowed position reads zeros, as the
  soft-attention readout does.
  """

  def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """h: [B, L, d], mask: [B, L] -> [B, d]."""
    del deterministic
    return last_state(h, mask)

  def causal(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """h: [B, L, d], mask: [B, L] -> [B, L, d]; row t is the state at the last allowed j <= t."""
    del deterministic
    return h_at(h, last_allowed(mask))


class NARMReadout(nn.Module):
  """NARM's readout (Li et al. 2017): a global and a local encoding, then a bilinear map.

  q = the state at the last position the mask allows (NARM's global encoding c_g);
  alpha_j = v^T sigmoid(A1 q + A2 h_j) for the allowed j, 0 elsewhere (not normalised, as in
  NARM); c_l = sum_j alpha_j h_j; s = B dropout([c_l ; q]). A1, A2: d x d, v: d x 1,
  B: 2d x d, no biases (RecBole's NARM). Gaps in the mask are allowed (the hot and cold
  views); a row with no allowed position reads zeros.
  """

  features: int
  kernel_init: Initializer
  dropout: float = 0.0

  def setup(self):
    dense = lambda n, name: nn.Dense(n, use_bias=False, kernel_init=self.kernel_init, name=name)
    self.a1 = dense(self.features, "a1")
    self.a2 = dense(self.features, "a2")
    self.v = dense(1, "v")
    self.b = dense(self.features, "b")
    self.drop = nn.Dropout(self.dropout)

  def combine(
      self, h: jax.Array, mask: jax.Array, q: jax.Array, deterministic: bool = True
  ) -> jax.Array:
    """h [B, L, d], mask [B, L], q [B, d] (the state at the last allowed position) -> [B, d]."""
    alpha = self.v(jax.nn.sigmoid(self.a1(q)[:, None, :] + self.a2(h)))[..., 0]
    local = jnp.einsum("bl,bld->bd", alpha * mask.astype(h.dtype), h)
    return self._decode(local, q, deterministic)

  def _decode(self, local: jax.Array, q: jax.Array, deterministic: bool) -> jax.Array:
    """B dropout([c_l ; q]): [..., d] each -> [..., d]."""
    c = self.drop(jnp.concatenate([local, q], axis=-1), deterministic=deterministic)
    return self.b(c)

  def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """h: [B, L, d], mask: [B, L] -> [B, d]."""
    return self.combine(h, mask, last_state(h, mask), deterministic)

  def causal(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """h: [B, L, d], mask: [B, L] -> [B, L, d]; row t reads the allowed positions <= t, with
    the query at the last of them. O(L^2 d) per session, as the soft-attention readout."""
    q = h_at(h, last_allowed(mask))  # [B, L(t), d]
    z = jax.nn.sigmoid(self.a1(q)[:, :, None, :] + self.a2(h)[:, None, :, :])  # [B, t, j, d]
    alpha = self.v(z)[..., 0]  # [B, t, j]
    length = h.shape[1]
    allowed = jnp.tril(jnp.ones((length, length), h.dtype))[None] * mask.astype(h.dtype)[:, None]
    local = jnp.einsum("btj,bjd->btd", alpha * allowed, h)
    return self._decode(local, q, deterministic)


def last_state(h: jax.Array, mask: jax.Array) -> jax.Array:
  """h [B, L, d] at the highest allowed position of mask [B, L] (zeros if none) -> [B, d]."""
  return h_at(h, last_allowed(mask)[:, -1:])[:, 0]


def last_allowed(mask: jax.Array) -> jax.Array:
  """mask [B, L] -> int32 [B, L]: the highest allowed position <= t, or -1 if there is none."""
  positions = jnp.arange(mask.shape[-1], dtype=jnp.int32)
  return jax.lax.cummax(jnp.where(mask.astype(bool), positions, -1), axis=mask.ndim - 1)


def h_at(h: jax.Array, index: jax.Array) -> jax.Array:
  """h [B, L, d] read at index [B, T] (-1: zeros) -> [B, T, d]."""
  picked = jnp.take_along_axis(h, jnp.maximum(index, 0)[..., None], axis=1)
  return jnp.where((index >= 0)[..., None], picked, jnp.zeros((), h.dtype))


def make_readout(
    kind: str, features: int, kernel_init: Initializer, name: str, dropout: float = 0.0
) -> nn.Module:
  """The readout `kind` (READOUTS); `dropout`: before NARM's bilinear map (narm only)."""
  if kind == "soft_attention":
    return SoftAttentionReadout(features, kernel_init, name=name)
  if kind == "last":
    return LastReadout(name=name)
  if kind == "narm":
    return NARMReadout(features, kernel_init, dropout, name=name)
  raise ValueError(f"model.readout must be one of {READOUTS}, got {kind!r}")
