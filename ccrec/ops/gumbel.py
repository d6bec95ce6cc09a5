"""Gumbel-softmax sampling with a straight-through hard variant (docs/method.md §3.1).

o = softmax((logits + g) / tau), g = -log(-log u), u ~ U(0, 1). The hard
variant returns the one-hot of argmax(o) in the forward pass and the gradient
of the soft sample o in the backward pass (straight-through estimator).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def gumbel_noise(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """Standard Gumbel noise g = -log(-log u), u ~ U(0, 1), of the given shape."""
  return jax.random.gumbel(key, tuple(shape), dtype)


@jax.custom_jvp
def straight_through_one_hot(soft: jax.Array) -> jax.Array:
  """[..., K] -> one-hot of argmax over the last axis; its derivative is identity.

  Defined with a custom JVP (not `one_hot + soft - stop_gradient(soft)`) so the
  forward value is an exact one-hot (no 1 + y - y rounding) while gradients,
  forward and reverse mode, are those of `soft`.
  """
  return jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)


@straight_through_one_hot.defjvp
def _straight_through_jvp(primals, tangents):
  (soft,), (soft_dot,) = primals, tangents
  return straight_through_one_hot(soft), soft_dot


def gumbel_softmax(
    key: jax.Array, logits: jax.Array, temperature: float, hard: bool = False
) -> jax.Array:
  """A Gumbel-softmax sample over the last axis.

  Args:
    key: PRNG key (jax.random.key) for the Gumbel noise.
    logits: [..., K] unnormalised log-probabilities (log alpha up to a constant;
      -inf entries are never sampled).
    temperature: tau > 0; as tau -> 0 the soft sample approaches a one-hot.
    hard: if True, the forward value is the exact one-hot of the soft sample's
      argmax and the gradient is the soft sample's (straight-through).

  Returns:
    [..., K] sample: soft (rows sum to 1) or one-hot.
  """
  noise = gumbel_noise(key, logits.shape, logits.dtype)
  soft = jax.nn.softmax((logits + noise) / temperature, axis=-1)
  return straight_through_one_hot(soft) if hard else soft
