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


def make_optimizer(train_config: Any, steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """Adam/AdamW with optional L2 (added to the gradient, as torch's weight_decay) and clipping.

  Fields of config.train used: optimizer ('adam' | 'adamw'), learning_rate,
  lr_decay (the rate is multiplied by it every `steps_per_epoch` steps,
  smoothly; 1.0 keeps it constant), weight_decay (decoupled, adamw only), l2
  (coupled L2 on every parameter, the paper's 1e-5), clip_norm (0 disables).
  The schedule's position lives in the optimizer state, so a resumed run
  continues it where it stopped.
  """
  lr = train_config.learning_rate
  decay = train_config.get("lr_decay", 1.0)
  if decay < 1.0:
    lr = optax.exponential_decay(lr, transition_steps=max(int(steps_per_epoch), 1),
                                 decay_rate=decay)
  parts = []
  if train_config.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(train_config.clip_norm))
  if train_config.l2 > 0:
    parts.append(optax.add_decayed_weights(train_config.l2))
  if train_config.optimizer == "adam":
    parts.append(optax.adam(lr))
  elif train_config.optimizer == "adamw":
    parts.append(optax.adamw(lr, weight_decay=train_config.weight_decay))
  else:
    raise ValueError(f"train.optimizer must be 'adam' or 'adamw', got {train_config.optimizer!r}")
  return optax.chain(*parts)
