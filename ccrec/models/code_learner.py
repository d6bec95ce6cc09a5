"""Gumbel-softmax autoencoder that learns compositional codes (docs/method.md §3.1).

  h = tanh(X W + b),                      W [d, MK/2]
  logits = softplus(h W' + b'),           reshaped [.., M, K]
  alpha = softmax_K(logits)
  o^m = one_hot(argmax softmax((log alpha^m + g) / tau))   (straight-through)
  e = sum_m o^m C_m                       codebooks C [M, K, d] (param 'codebooks')

In training mode (train=True) the Gumbel noise comes from the 'gumbel' rng
stream; in eval mode the code is the noise-free argmax of alpha, i.e. the
reconstruction is exactly what the frozen codes and these codebooks give.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ccrec.item_layout import code_dtype
from ccrec.models.initializers import CODEBOOK_INIT, Initializer
from ccrec.ops.gumbel import gumbel_softmax


class CodeLearner(nn.Module):
  """Encoder X -> code distributions alpha [.., M, K]; decoder one-hot codes -> sum of codewords.

  Attributes:
    num_codebooks: M.
    codebook_size: K.
    features: d (input and output width).
    temperature: Gumbel-softmax tau (0.3 in the paper).
    codebook_init: initializer of the [M, K, d] codebooks.
  """

  num_codebooks: int
  codebook_size: int
  features: int
  temperature: float = 0.3
  codebook_init: Initializer = CODEBOOK_INIT

  def setup(self):
    m, k = self.num_codebooks, self.codebook_size
    self.hidden = nn.Dense(max(1, m * k // 2), name="hidden")
    self.to_logits = nn.Dense(m * k, name="logits")
    self.codebooks = self.param("codebooks", self.codebook_init, (m, k, self.features))

  def log_alpha(self, x: jax.Array) -> jax.Array:
    """x [..., d] -> log alpha [..., M, K] (log-softmax over K)."""
    h = jnp.tanh(self.hidden(x))
    logits = nn.softplus(self.to_logits(h))
    logits = logits.reshape(*x.shape[:-1], self.num_codebooks, self.codebook_size)
    return jax.nn.log_softmax(logits, axis=-1)

  def decode(self, one_hot: jax.Array) -> jax.Array:
    """[..., M, K] (one-hot or soft) -> [..., d] = sum_m o^m C_m."""
    return jnp.einsum("...mk,mkd->...d", one_hot, self.codebooks)

  def codes(self, x: jax.Array) -> jax.Array:
    """x [..., d] -> noise-free codes argmax_K alpha, [..., M] uint8 (K <= 256) or uint16."""
    return jnp.argmax(self.log_alpha(x), axis=-1).astype(code_dtype(self.codebook_size))

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x [..., d] -> reconstruction [..., d].

    train=True: hard straight-through Gumbel-softmax sample ('gumbel' rng);
    train=False: the argmax code (no noise, no rng).
    """
    log_alpha = self.log_alpha(x)
    if train:
      o = gumbel_softmax(self.make_rng("gumbel"), log_alpha, self.temperature, hard=True)
    else:
      o = jax.nn.one_hot(jnp.argmax(log_alpha, axis=-1), self.codebook_size, dtype=log_alpha.dtype)
    return self.decode(o)
