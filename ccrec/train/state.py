"""Train state and optimizers.

A TrainState holds one model's trainable params, its non-trainable variable
collections (`consts`, e.g. the student's frozen integer codes) and its own
optimizer state. The distillation stage carries two of them.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  consts: Any  # variable collections other than 'params' (never optimised)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, variables: dict, tx: optax.GradientTransformation) -> "TrainState":
    variables = dict(variables)
    params = variables.pop("params")
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               consts=variables, tx=tx)

  def variables(self, params: Any | None = None) -> dict:
    return {"params": self.params if params is None else params, **self.consts}

  def apply_gradients(self, grads: Any) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)


def make_optimizer(train_config: Any) -> optax.GradientTransformation:
  """Adam/AdamW with optional L2 (added to the gradient, as torch's weight_decay) and clipping.

  Fields of config.train used: optimizer ('adam' | 'adamw'), learning_rate,
  weight_decay (decoupled, adamw only), l2 (coupled L2 on every parameter, the
  paper's 1e-5), clip_norm (0 disables).
  """
  parts = []
  if train_config.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(train_config.clip_norm))
  if train_config.l2 > 0:
    parts.append(optax.add_decayed_weights(train_config.l2))
  if train_config.optimizer == "adam":
    parts.append(optax.adam(train_config.learning_rate))
  elif train_config.optimizer == "adamw":
    parts.append(optax.adamw(train_config.learning_rate, weight_decay=train_config.weight_decay))
  else:
    raise ValueError(f"train.optimizer must be 'adam' or 'adamw', got {train_config.optimizer!r}")
  return optax.chain(*parts)
