"""Hot/cold session views and their recombination (docs/method.md §4).

For each session, a hot view and a cold view are readouts (of the models'
readout kind: soft attention, last position or NARM's, without dropout) of the
encoder's per-position states restricted to the positions holding hot (top 20% by
training frequency) or cold items. Teacher and student each have their own
pair of view readouts. The views are recombined across the two models:

  z_tea = W_t [hot_tea ; cold_stu],   z_stu = W_s [hot_stu ; cold_tea]

A session with no hot (or no cold) item uses the model's full-session vector
for the missing view ("swapped full-session representation"); a session with
fewer than two clicks is left out of the contrastive loss (weight 0).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ccrec.models.initializers import Initializer, make_initializer
from ccrec.models.readout import make_readout


class DistillHeads(nn.Module):
  """View readouts of both models plus the two recombination projections."""

  features: int
  readout: str = "soft_attention"
  init_name: str = "truncated_normal"  # not `init`: that would shadow Module.init
  init_scale: float = 0.02

  def setup(self):
    init: Initializer = make_initializer(self.init_name, self.init_scale)
    self.readouts = {
        name: make_readout(self.readout, self.features, init, name=f"{name}_readout")
        for name in ("teacher_hot", "teacher_cold", "student_hot", "student_cold")
    }
    self.project_teacher = nn.Dense(
        self.features, use_bias=False, kernel_init=init, name="project_teacher"
    )
    self.project_student = nn.Dense(
        self.features, use_bias=False, kernel_init=init, name="project_student"
    )

  def views(
      self, model: str, hidden: jax.Array, mask: jax.Array, session: jax.Array, is_hot: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """hidden [B, L, d], mask/is_hot [B, L] bool, session [B, d] -> (hot, cold) [B, d] each."""
    hot_mask = mask & is_hot
    cold_mask = mask & ~is_hot
    hot = self.readouts[f"{model}_hot"](hidden, hot_mask)
    cold = self.readouts[f"{model}_cold"](hidden, cold_mask)
    hot = jnp.where(hot_mask.any(1, keepdims=True), hot, session)
    cold = jnp.where(cold_mask.any(1, keepdims=True), cold, session)
    return hot, cold

  def __call__(
      self, teacher: dict, student: dict, is_hot: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """teacher/student: SessionRecommender outputs; is_hot [B, L] -> (z_tea, z_stu) [B, d]."""
    hot_t, cold_t = self.views(
        "teacher", teacher["hidden"], teacher["mask"], teacher["session"], is_hot
    )
    hot_s, cold_s = self.views(
        "student", student["hidden"], student["mask"], student["session"], is_hot
    )
    z_tea = self.project_teacher(jnp.concatenate([hot_t, cold_s], axis=-1))
    z_stu = self.project_student(jnp.concatenate([hot_s, cold_t], axis=-1))
    return z_tea, z_stu


def init_heads(heads: DistillHeads, key: jax.Array, max_len: int) -> dict:
  d = heads.features
  dummy = {
      "hidden": jnp.zeros((1, max_len, d)),
      "mask": jnp.ones((1, max_len), bool),
      "session": jnp.zeros((1, d)),
  }
  return dict(heads.init(key, dummy, dummy, jnp.zeros((1, max_len), bool)))
