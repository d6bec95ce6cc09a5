"""Student pre-training and bidirectional self-supervised distillation (docs/method.md §3-4).

Both steps are single jitted functions. The distillation step computes, for
one batch, the teacher and student forwards (the student on its mixup table
e' = eta X + (1 - eta) e during training), both recommendation losses, the
hot/cold views and their recombination, InfoNCE, the soft-target KL and the
reconstruction loss, and updates the teacher, the student and the
distillation heads, each with its own optimizer state:

  L = L_rec(teacher) + L_rec(student) + w_mse L_mse + beta L_con + gamma L_soft

Gradient flow (documented choices):
  * soft targets: the teacher's distribution is the target (stop_gradient), as
    in standard KD; the student learns from it;
  * L_mse pulls the student's composite codewords toward the teacher table,
    which is held fixed in this term (the teacher is not pulled toward the codes);
  * the teacher table inside the student's mixup table is held fixed too: the
    student's own losses (its L_rec and L_soft) never move the teacher;
  * the contrastive loss reaches both models: the student's views shape the
    teacher and vice versa (the "bidirectional" transfer), plus the teacher's
    own L_rec keeps it training;
  * bidirectional=False ('w/o-b') freezes the teacher: its whole forward pass
    is under stop_gradient, it runs without dropout, its L_rec is dropped and
    its parameters and optimizer state are left untouched.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from ccrec.models.recommender import SessionRecommender
from ccrec.models.views import DistillHeads, init_heads
from ccrec.ops import losses, sampled
from ccrec.train.state import TrainState
from ccrec.train.teacher import recommendation_loss, session_targets


@flax.struct.dataclass
class DistillState:
  teacher: TrainState
  student: TrainState
  heads: TrainState

  @property
  def step(self) -> jax.Array:
    return self.student.step


def create_state(
    teacher_variables: dict,
    student_variables: dict,
    heads: DistillHeads,
    heads_key: jax.Array,
    max_len: int,
    tx,
    student_ema_decay: float = 0.0,
) -> DistillState:
  """Teacher, student and freshly initialised heads, each with its own state of optimizer `tx`
  (the student with a moving average of its weights when `student_ema_decay` > 0)."""
  return DistillState(
      teacher=TrainState.create(teacher_variables, tx),
      student=TrainState.create(student_variables, tx, ema_decay=student_ema_decay),
      heads=TrainState.create(init_heads(heads, heads_key, max_len), tx),
  )


def mixup_table(teacher_table: jax.Array, student_table: jax.Array, eta: float) -> jax.Array:
  """e' = eta * X + (1 - eta) * e: eta weights the TEACHER table (docs/method.md §3.2)."""
  return eta * teacher_table + (1.0 - eta) * student_table


def eta_at(eta: float, step: jax.Array, decay_steps: int) -> jax.Array | float:
  """The mixup weight at `step`: eta, or (decay_steps > 0) eta falling linearly to 0."""
  if decay_steps <= 0:
    return eta
  return eta * jnp.clip(1.0 - step.astype(jnp.float32) / decay_steps, 0.0, 1.0)


def student_table_for_training(
    student: SessionRecommender, student_vars: dict, teacher_table: jax.Array, *, mixup: bool, eta
) -> tuple[jax.Array, jax.Array]:
  """Returns (composite table e [V+1, d], the table the student trains on).

  Training materialises the [V+1, d] table once per step (one gather-sum over
  the codes) and scores with one matmul; the code-table scoring path, which
  never builds it, is for evaluation and the device. Without mixup, or at a
  static eta of 0, the training table is the composite itself.
  """
  composite = student.apply(student_vars, method="table")
  if not mixup or (isinstance(eta, (int, float)) and eta == 0):
    return composite, composite
  return composite, mixup_table(teacher_table, composite, eta)


def reconstruction(composite: jax.Array, teacher_table: jax.Array) -> jax.Array:
  """Mean over items 1..V of ||e_v - X_v||^2 (the teacher table held fixed)."""
  v = composite.shape[0] - 1
  return losses.reconstruction_mse(
      composite[1:], jax.lax.stop_gradient(teacher_table[1:]), jnp.ones((v,), composite.dtype)
  )


def _ce(model, variables, s, targets, weights, table, label_smoothing=0.0, sample=None):
  """(logits, weighted CE sum): over every item, or over `sample` = (candidates, log counts)
  with the sampled softmax (`ccrec.ops.sampled`)."""
  if sample is not None:
    lookup = lambda ids: model.apply(variables, ids, table=table, method="lookup")
    logits = sampled.candidate_logits(s, lookup, targets, *sample)
    return logits, sampled.cross_entropy_sums(logits, weights, label_smoothing)[0]
  logits = model.apply(variables, s, table=table, method="score")
  return logits, losses.softmax_cross_entropy_sums(logits, targets, weights, label_smoothing)[0]


def make_pretrain_step(
    student: SessionRecommender,
    objective: str,
    *,
    mixup: bool,
    eta: float,
    mse_weight: float,
    eta_decay_steps: int = 0,
    label_smoothing: float = 0.0,
    rdrop: float = 0.0,
    fused_chunk: int = 0,
    sampler: sampled.Sampler | None = None,
) -> Callable:
  """Student pre-training: L_rec(student on the mixup table) + w_mse L_mse, teacher fixed.

  With `eta_decay_steps` > 0 the mixup weight falls linearly from eta to 0 over
  that many steps of this stage (`eta_at`). `label_smoothing` smooths L_rec's targets.
  `rdrop` = alpha > 0 trains L_rec with R-Drop, as the teacher step does
  (`teacher.make_train_step`): two dropout passes, the mean of their cross-entropies plus
  alpha times their symmetric KL, logged as `student/rdrop`. `fused_chunk` > 0 computes
  L_rec in chunks with closed-form gradients (`ccrec.ops.fused`); `sampler` computes it
  with the sampled softmax (`ccrec.ops.sampled`). All through `teacher.recommendation_loss`.

  Returns jitted `step(student_state, teacher_table, batch, key) -> (state, metric sums)`.
  """

  def loss_fn(params, state: TrainState, teacher_table, batch, key):
    variables = state.variables(params)
    composite, table = student_table_for_training(
        student, variables, teacher_table, mixup=mixup, eta=eta_at(eta, state.step, eta_decay_steps)
    )
    rec, terms, count = recommendation_loss(
        student,
        variables,
        batch,
        [jax.random.fold_in(key, i) for i in range(2)] if rdrop > 0 else [key],
        objective=objective,
        label_smoothing=label_smoothing,
        rdrop=rdrop,
        fused_chunk=fused_chunk,
        table=table,
        sampler=sampler,
    )
    mse = reconstruction(composite, teacher_table)
    loss = rec / jnp.maximum(count, 1.0) + mse_weight * mse
    return loss, {
        **{f"student/{k}": v for k, v in terms.items()},
        "codes/mse": mse * count,
        "count": count,
    }

  def step(state: TrainState, teacher_table: jax.Array, batch: dict, key: jax.Array):
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        state.params, state, teacher_table, batch, jax.random.fold_in(key, 1)
    )
    return state.apply_gradients(grads), metrics

  return jax.jit(step, donate_argnums=(0,))


def make_distill_step(
    teacher: SessionRecommender,
    student: SessionRecommender,
    heads: DistillHeads,
    hot: jax.Array,
    distill_config: Any,
    student_config: Any,
    objective: str,
    label_smoothing: float = 0.0,
    sampler: sampled.Sampler | None = None,
) -> Callable:
  """Returns jitted `step(state: DistillState, batch, key) -> (state, metric sums)`.

  `hot` is the bool [V + 1] hot-item mask. Config fields used: distill.{bidirectional,
  contrastive, soft_targets, beta, gamma, kd_temperature, con_temperature},
  student.{mixup, eta, eta_decay_epochs (> 0: eta = 0 here), mse_weight}.
  `label_smoothing` smooths the targets of both models' L_rec (never the soft targets).
  `sampler` computes both L_rec and the soft-target KL over one candidate set per step
  (the batch's targets + popularity draws, log-Q corrected; `ccrec.ops.sampled`).
  """
  dc, sc = distill_config, student_config
  bidirectional = bool(dc.bidirectional)
  hot = jnp.asarray(hot, bool)
  # A falling mixup weight reaches 0 during pre-training: distillation then trains the
  # composite table alone, the one the student is evaluated and deployed with.
  eta = 0.0 if sc.get("eta_decay_epochs", 0) > 0 else sc.eta

  def loss_fn(params, state: DistillState, batch, keys):
    t_params, s_params, h_params = params
    if not bidirectional:
      t_params = jax.lax.stop_gradient(t_params)
    t_vars = state.teacher.variables(t_params)
    s_vars = state.student.variables(s_params)
    teacher_table = teacher.apply(t_vars, method="table")
    composite, s_table = student_table_for_training(
        student, s_vars, jax.lax.stop_gradient(teacher_table), mixup=sc.mixup, eta=eta
    )
    t_out, t_s, targets, weights = session_targets(
        teacher, t_vars, batch, objective=objective, key=keys[0] if bidirectional else None
    )
    s_out, s_s, _, _ = session_targets(
        student, s_vars, batch, objective=objective, key=keys[1], table=s_table
    )
    count = weights.sum()
    norm = jnp.maximum(count, 1.0)
    sample = (
        None
        if sampler is None
        else (sampler.draw(keys[0], targets, weights), sampler.log_counts(weights))
    )
    t_logits, t_ce = _ce(teacher, t_vars, t_s, targets, weights, None, label_smoothing, sample)
    s_logits, s_ce = _ce(student, s_vars, s_s, targets, weights, s_table, label_smoothing, sample)
    mse = reconstruction(composite, teacher_table)
    total = s_ce / norm + sc.mse_weight * mse
    if bidirectional:
      total = total + t_ce / norm
    metrics = {"teacher/ce": t_ce, "student/ce": s_ce, "codes/mse": mse * count}
    if dc.soft_targets:
      kl = losses.kl_soft_targets(
          jax.lax.stop_gradient(t_logits), s_logits, weights, temperature=dc.kd_temperature
      )
      total = total + dc.gamma * kl
      metrics["kd/kl"] = kl * count
    if dc.contrastive:
      is_hot = jnp.take(hot, batch["items"], axis=0)
      z_tea, z_stu = heads.apply({"params": h_params}, t_out, s_out, is_hot)
      session_weight = (t_out["mask"].sum(1) >= 2).astype(z_tea.dtype)
      con = losses.info_nce(z_tea, z_stu, session_weight, temperature=dc.con_temperature)
      total = total + dc.beta * con
      metrics["kd/infonce"] = con * count
    metrics["total"] = total * count
    metrics["count"] = count
    return total, metrics

  def step(state: DistillState, batch: dict, key: jax.Array):
    keys = jax.random.split(key, 2)
    params = (state.teacher.params, state.student.params, state.heads.params)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, state, batch, keys)
    t_grads, s_grads, h_grads = grads
    teacher_state = state.teacher.apply_gradients(t_grads) if bidirectional else state.teacher
    new = DistillState(
        teacher=teacher_state,
        student=state.student.apply_gradients(s_grads),
        heads=state.heads.apply_gradients(h_grads),
    )
    return new, metrics

  return jax.jit(step, donate_argnums=(0,))
