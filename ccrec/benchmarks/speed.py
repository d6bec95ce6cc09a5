"""Training-speed measurement: seconds per epoch of the teacher step, per objective.

Runs the real jitted step on the real batches of a dataset for a fixed number
of steps per setting, side by side in one process, and extrapolates to one
epoch (every training target once). Used by launch/benchmark_train.py.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ccrec import config as config_lib
from ccrec.data import SessionDataset, hot_mask, prefix_batches, steps_per_epoch, window_batches
from ccrec.models.build import build_models
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.models.views import DistillHeads
from ccrec.ops import sampled
from ccrec.train import distill as distill_lib
from ccrec.train import teacher as teacher_lib
from ccrec.train.state import TrainState, make_optimizer


def epoch_time(
    dataset: SessionDataset,
    config: Any,
    *,
    objective: str,
    batch_size: int,
    stride: int | None = None,
    rdrop: float | None = None,
    fused_chunk: int | None = None,
    loss: str | None = None,
    length_bucket: int | None = None,
    steps: int = 30,
    warmup: int = 2,
) -> dict:
  """Median-based seconds per epoch for one objective setting (compile excluded).

  `rdrop`, `fused_chunk`, `loss` and `length_bucket` None take config.train's (R-Drop runs a second
  pass per step; the fused loss never materialises the logits; loss 'sampled' scores
  the batch's targets plus config.train.num_negatives popularity draws per step).
  """
  rdrop = config.train.rdrop if rdrop is None else rdrop
  fused_chunk = config.train.fused_chunk if fused_chunk is None else fused_chunk
  loss = config.train.loss if loss is None else loss
  bucket = config.train.get("length_bucket", 0) if length_bucket is None else length_bucket
  sampler = sampled.from_config(
      ml_collections.ConfigDict({"loss": loss, "num_negatives": config.train.num_negatives}),
      dataset.item_counts,
  )
  max_len = config.data.max_len
  model = SessionRecommender(
      ModelSpec.from_config(config.model, dataset.num_items, max_len=max_len)
  )
  state = TrainState.create(init_variables(model, jax.random.key(0)), make_optimizer(config.train))
  step = teacher_lib.make_train_step(
      model,
      objective,
      label_smoothing=config.train.label_smoothing,
      rdrop=rdrop,
      rdrop_detach=config.train.rdrop_detach,
      fused_chunk=fused_chunk,
      sampler=sampler,
  )
  per_epoch = steps_per_epoch(dataset.train, objective, batch_size, max_len, stride)
  if objective == "window":
    batches = window_batches(
        dataset.train, batch_size, max_len, seed=0, stride=stride, length_bucket=bucket
    )
  else:
    batches = prefix_batches(
        dataset.train_examples(max_len),
        batch_size,
        max_len,
        shuffle=True,
        seed=0,
        length_bucket=bucket,
    )
  times, targets = [], []
  for i, batch in enumerate(batches):
    if i >= warmup + steps:
      break
    t0 = time.perf_counter()
    state, metrics = step(state, batch, jax.random.key(i))
    jax.block_until_ready(metrics)
    if i >= warmup:
      times.append(time.perf_counter() - t0)
      targets.append(float(metrics["count"]))
  per_step = float(np.median(times))
  return {
      "objective": objective,
      "stride": stride or max_len,
      "batch_size": batch_size,
      "rdrop": rdrop,
      "fused_chunk": fused_chunk,
      "loss": loss,
      "length_bucket": bucket,
      "steps_per_epoch": per_epoch,
      "seconds_per_step": per_step,
      "seconds_per_epoch": per_step * per_epoch,
      "targets_per_second": float(np.sum(targets) / np.sum(times)),
  }


def distill_step_ratio(
    dataset: SessionDataset, config: Any, *, steps: int = 30, warmup: int = 2
) -> dict:
  """Seconds per step of the distillation step vs the teacher-only step, same batches.

  Also times the student's own step (L_rec + L_mse on its composite table, as in
  pre-training without mixup): `two_models_ratio` = (teacher + student) / teacher
  is what the two models cost when run as separate programs. All three run on
  the same real window batches of `config` (its distillation batch size,
  distill.batch_size or else train.batch_size: the ratio is at the batch the
  distillation stage runs at; objective, model sizes, codes and distillation
  switches; the teacher-only step is the plain one, without R-Drop's second pass,
  as the distillation step's teacher is), interleaved step
  by step so machine load affects both alike; compile excluded; medians.
  """
  teacher, student = build_models(config, dataset.num_items)
  tx = make_optimizer(config.train)
  key = jax.random.key(0)
  teacher_vars = init_variables(teacher, key)
  teacher_state = TrainState.create(teacher_vars, tx)
  heads = DistillHeads(
      config.model.d, config.model.readout, config.model.init, config.model.init_scale
  )
  # Own copies of the teacher's arrays: both steps donate their state.
  d_state = distill_lib.create_state(
      jax.tree.map(jnp.copy, teacher_vars),
      init_variables(student, jax.random.fold_in(key, 1)),
      heads,
      jax.random.fold_in(key, 2),
      config.data.max_len,
      tx,
      student_ema_decay=config.student.ema_decay,
  )
  hot = hot_mask(dataset.item_counts, config.data.hot_fraction)
  ls = config.train.label_smoothing
  t_step = teacher_lib.make_train_step(teacher, config.train.objective, label_smoothing=ls)
  # The two-model floor: the student's own step (its L_rec + L_mse on the composite table).
  s_state = TrainState.create(init_variables(student, jax.random.fold_in(key, 3)), tx)
  teacher_table = teacher.apply(teacher_vars, method="table")
  s_step = distill_lib.make_pretrain_step(
      student,
      config.train.objective,
      mixup=False,
      eta=0.0,
      mse_weight=config.student.mse_weight,
      label_smoothing=ls,
  )
  d_step = distill_lib.make_distill_step(
      teacher,
      student,
      heads,
      hot,
      config.distill,
      config.student,
      config.train.objective,
      label_smoothing=ls,
  )
  stride = config.train.window_stride or None
  batch_size = config_lib.distill_batch_size(config)
  batches = window_batches(dataset.train, batch_size, config.data.max_len, seed=0, stride=stride)
  t_times, s_times, d_times = [], [], []
  for i, batch in enumerate(batches):
    if i >= warmup + steps:
      break
    k = jax.random.key(i)
    t0 = time.perf_counter()
    teacher_state, m = t_step(teacher_state, batch, k)
    jax.block_until_ready(m)
    t1 = time.perf_counter()
    s_state, m = s_step(s_state, teacher_table, batch, k)
    jax.block_until_ready(m)
    t2 = time.perf_counter()
    d_state, m = d_step(d_state, batch, k)
    jax.block_until_ready(m)
    t3 = time.perf_counter()
    if i >= warmup:
      t_times.append(t1 - t0)
      s_times.append(t2 - t1)
      d_times.append(t3 - t2)
  teacher_s, student_s, distill_s = (float(np.median(x)) for x in (t_times, s_times, d_times))
  return {
      "teacher_seconds_per_step": teacher_s,
      "student_seconds_per_step": student_s,
      "distill_seconds_per_step": distill_s,
      "ratio": distill_s / teacher_s,
      "two_models_ratio": (teacher_s + student_s) / teacher_s,
      "batch_size": batch_size,
      "steps": len(t_times),
  }
