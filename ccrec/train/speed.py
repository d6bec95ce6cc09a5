"""Training-speed measurement: seconds per epoch of the teacher step, per objective.

Runs the real jitted step on the real batches of a dataset for a fixed number
of steps per setting, side by side in one process, and extrapolates to one
epoch (every training target once). Used by launch/benchmark_train.py.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from ccrec.data import SessionDataset, num_batches, num_windows, prefix_batches, window_batches
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.train import teacher as teacher_lib
from ccrec.train.state import TrainState, make_optimizer


def epoch_time(dataset: SessionDataset, config: Any, *, objective: str, batch_size: int,
               stride: int | None = None, steps: int = 30, warmup: int = 2) -> dict:
  """Median-based seconds per epoch for one objective setting (compile excluded)."""
  max_len = config.data.max_len
  model = SessionRecommender(ModelSpec.from_config(config.model, dataset.num_items,
                                                   max_len=max_len))
  state = TrainState.create(init_variables(model, jax.random.key(0)), make_optimizer(config.train))
  step = teacher_lib.make_train_step(model, objective)
  if objective == "window":
    batches = window_batches(dataset.train, batch_size, max_len, seed=0, stride=stride)
    per_epoch = num_batches(num_windows(dataset.train, max_len, stride), batch_size)
  else:
    examples = dataset.train_examples(max_len)
    batches = prefix_batches(examples, batch_size, max_len, shuffle=True, seed=0)
    per_epoch = num_batches(len(examples.targets), batch_size)
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
  return {"objective": objective, "stride": stride or max_len, "batch_size": batch_size,
          "steps_per_epoch": per_epoch, "seconds_per_step": per_step,
          "seconds_per_epoch": per_step * per_epoch,
          "targets_per_second": float(np.sum(targets) / np.sum(times))}


def distill_step_ratio(dataset: SessionDataset, config: Any, *, steps: int = 30,
                       warmup: int = 2) -> dict:
  """Seconds per step of the distillation step vs the teacher-only step, same batches.

  Both steps run on the same real window batches of `config` (its batch size,
  objective, model sizes, codes and distillation switches), interleaved step
  by step so machine load affects both alike; compile excluded; medians.
  """
  from ccrec.data import hot_mask
  from ccrec.models.views import DistillHeads, init_heads
  from ccrec.train import distill as distill_lib
  from ccrec.train import pipeline

  teacher, student = pipeline.build_models(config, dataset.num_items)
  tx = make_optimizer(config.train)
  key = jax.random.key(0)
  teacher_state = TrainState.create(init_variables(teacher, key), tx)
  student_state = TrainState.create(init_variables(student, jax.random.fold_in(key, 1)), tx)
  heads = DistillHeads(config.model.d, config.model.readout, config.model.init,
                       config.model.init_scale)
  copy = lambda st: jax.tree.map(lambda x: x.copy() if hasattr(x, "copy") else x, st)
  d_state = distill_lib.DistillState(
      teacher=copy(teacher_state), student=student_state,
      heads=TrainState.create(init_heads(heads, jax.random.fold_in(key, 2), config.data.max_len),
                              tx))
  hot = hot_mask(dataset.item_counts, config.data.hot_fraction)
  t_step = teacher_lib.make_train_step(teacher, config.train.objective)
  d_step = distill_lib.make_distill_step(teacher, student, heads, hot, config.distill,
                                         config.student, config.train.objective)
  stride = config.train.window_stride or None
  batches = window_batches(dataset.train, config.train.batch_size, config.data.max_len,
                           seed=0, stride=stride)
  t_times, d_times = [], []
  for i, batch in enumerate(batches):
    if i >= warmup + steps:
      break
    k = jax.random.key(i)
    t0 = time.perf_counter()
    teacher_state, m = t_step(teacher_state, batch, k)
    jax.block_until_ready(m)
    t1 = time.perf_counter()
    d_state, m = d_step(d_state, batch, k)
    jax.block_until_ready(m)
    t2 = time.perf_counter()
    if i >= warmup:
      t_times.append(t1 - t0)
      d_times.append(t2 - t1)
  teacher_s, distill_s = float(np.median(t_times)), float(np.median(d_times))
  return {"teacher_seconds_per_step": teacher_s, "distill_seconds_per_step": distill_s,
          "ratio": distill_s / teacher_s, "batch_size": config.train.batch_size,
          "steps": len(t_times)}
