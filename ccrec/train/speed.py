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
