"""The training-speed measurements behind BENCHMARKS.md, timed with a scripted clock.

The steps run for real; `speed.time` is replaced by a clock whose readings advance by
set amounts, so every reported time and ratio has a value known in advance.
"""

import itertools

import numpy as np
import pytest

from ccrec.benchmarks import speed
from ccrec.data import window_batches
from ccrec.workflow import workdir

from helpers import tiny


class _Clock:
  """perf_counter() readings that advance by `steps` in turn (cyclically)."""

  def __init__(self, *steps):
    self._steps = itertools.cycle(steps)
    self._now = 0.0

  def perf_counter(self):
    now = self._now
    self._now += next(self._steps)
    return now


def test_epoch_time_reports_the_median_step_and_counts_the_epochs_batches(monkeypatch):
  c = tiny()
  dataset = workdir.load_data(c)
  # Every reading 0.5 s after the one before: each timed step takes 0.5 s.
  monkeypatch.setattr(speed, "time", _Clock(0.5))
  r = speed.epoch_time(dataset, c, objective="window", batch_size=8, steps=3, warmup=1)
  # One epoch = the batches an epoch of training really yields (not a formula of its own).
  batches = list(window_batches(dataset.train, 8, c.data.max_len, seed=0))
  assert r["steps_per_epoch"] == len(batches)
  assert r["seconds_per_step"] == 0.5
  assert r["seconds_per_epoch"] == pytest.approx(0.5 * len(batches))
  # Targets of the three timed steps (after one warm-up step), over their 1.5 s.
  timed = sum(float(np.sum(b["weights"])) for b in batches[1:4])
  assert r["targets_per_second"] == pytest.approx(timed / 1.5)


@pytest.mark.slow
def test_epoch_time_of_the_prefix_objective_counts_one_step_per_batch_of_prefixes():
  c = tiny()
  dataset = workdir.load_data(c)
  p = speed.epoch_time(dataset, c, objective="prefix", batch_size=8, steps=3, warmup=1)
  assert p["steps_per_epoch"] == -(-len(dataset.train_examples(c.data.max_len).targets) // 8)


@pytest.mark.slow
def test_distill_step_ratio_times_the_three_steps_it_names(monkeypatch):
  c = tiny()
  dataset = workdir.load_data(c)
  # Four readings per step: teacher 1 s, student 2 s, distillation 3 s, then a gap.
  monkeypatch.setattr(speed, "time", _Clock(1.0, 2.0, 3.0, 10.0))
  d = speed.distill_step_ratio(dataset, c, steps=3, warmup=1)
  # At the distillation stage's batch (tiny: distill.batch_size=16, train.batch_size=32).
  assert c.distill.batch_size != c.train.batch_size
  assert d["steps"] == 3 and d["batch_size"] == c.distill.batch_size
  assert (
      d["teacher_seconds_per_step"],
      d["student_seconds_per_step"],
      d["distill_seconds_per_step"],
  ) == (1.0, 2.0, 3.0)
  assert d["ratio"] == 3.0 and d["two_models_ratio"] == 3.0


def test_epoch_time_with_the_sampled_loss_trains_the_step_on_the_configs_sampler(monkeypatch):
  c = tiny()
  dataset = workdir.load_data(c)
  made = []
  make = speed.teacher_lib.make_train_step

  def spy(*args, **kwargs):
    made.append(kwargs.get("sampler"))
    return make(*args, **kwargs)

  monkeypatch.setattr(speed.teacher_lib, "make_train_step", spy)
  r = speed.epoch_time(
      dataset, c, objective="window", batch_size=8, loss="sampled", steps=2, warmup=1
  )
  assert r["loss"] == "sampled"
  (sampler,) = made
  assert sampler.num_negatives == c.train.num_negatives
  f = speed.epoch_time(dataset, c, objective="window", batch_size=8, loss="full", steps=2, warmup=1)
  assert f["loss"] == "full" and made[1] is None
  with pytest.raises(ValueError, match="loss must be one of"):
    speed.epoch_time(dataset, c, objective="window", batch_size=8, loss="nce")
