"""Weight initialisers of the models, by name (config.model.init) or as the codebooks' default."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]  # (key, shape, dtype) -> array


def uniform(scale: float) -> Initializer:
  """U(-scale, scale) (the paper's initialisation, scale 0.1 in its code)."""

  def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


CODEBOOK_INIT = uniform(0.1)  # the codebooks' default, the reference code's


def make_initializer(name: str, scale: float) -> Initializer:
  """Weight initializer by name: 'uniform' (the paper's U(-scale, scale)) or 'truncated_normal'."""
  if name == "uniform":
    return uniform(scale)
  if name == "truncated_normal":
    return nn.initializers.truncated_normal(stddev=scale)
  if name == "normal":
    return nn.initializers.normal(stddev=scale)
  raise ValueError(f"model.init must be 'uniform', 'truncated_normal' or 'normal', got {name!r}")
