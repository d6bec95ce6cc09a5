"""Train state and optimizers.

A TrainState holds one model's trainable params, its non-trainable variable
collections (`consts`, e.g. the student's frozen integer codes) and its own
optimizer state. The distillation stage carries two of them.

With `ema_decay` > 0 it also keeps an exponential moving average of the params
(Polyak averaging) in its optimizer state (`params_ema`, chained after the
optimizer; without it the state and its checkpoints are laid out as before).
`variables()` then returns the averaged weights: they are what is validated,
selected, evaluated, handed to the next stage and exported, while the
optimizer keeps stepping the raw params.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax


class ParamsEmaState(NamedTuple):
  count: jax.Array  # updates so far
  ema: Any  # the moving average of the params


def params_ema(decay: float) -> optax.GradientTransformation:
  """Keeps an exponential moving average of the params in the optimizer state.

  Chained last (after every transformation that changes the updates), it sees
  the params before the step and the step's final updates, averages the new
  params and passes the updates on unchanged. The decay at update t is
  min(decay, (1 + t) / (10 + t)), as in tf.train.ExponentialMovingAverage.
  """

  def init(params):
    # A copy: a donating train step may not receive one buffer twice.
    return ParamsEmaState(count=jnp.zeros((), jnp.int32), ema=jax.tree.map(jnp.array, params))

  def update(updates, state, params):
    t = state.count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: (e + (1.0 - d) * (p - e)).astype(e.dtype), state.ema, new)
    return updates, ParamsEmaState(count=state.count + 1, ema=ema)

  return optax.GradientTransformation(init, update)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  consts: Any  # variable collections other than 'params' (never optimised)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)

  @classmethod
  def create(
      cls, variables: dict, tx: optax.GradientTransformation, ema_decay: float = 0.0
  ) -> "TrainState":
    """`ema_decay` > 0 chains `params_ema` after `tx`: the state then keeps the average."""
    if not 0.0 <= ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {ema_decay!r}")
    variables = dict(variables)
    params = variables.pop("params")
    if ema_decay > 0:
      tx = optax.chain(tx, params_ema(ema_decay))
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        consts=variables,
        tx=tx,
        ema_decay=float(ema_decay),
    )

  @property
  def ema(self) -> Any:
    """The moving average of the params, or None when the state keeps none."""
    return self.opt_state[-1].ema if self.ema_decay > 0 else None

  def variables(self, params: Any | None = None) -> dict:
    """The model's variables with `params`; by default the weights it is evaluated with
    (the moving average when the state keeps one, else the params)."""
    if params is None:
      params = self.params if self.ema is None else self.ema
    return {"params": params, **self.consts}

  def apply_gradients(self, grads: Any) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(
        step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state
    )


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
    lr = optax.exponential_decay(
        lr, transition_steps=max(int(steps_per_epoch), 1), decay_rate=decay
    )
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
