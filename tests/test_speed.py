"""The training-speed measurements behind BENCHMARKS.md run and report sane figures."""

import math

from ccrec.data import window_batches
from ccrec.benchmarks import speed
from ccrec.workflow import workdir
from helpers import tiny


def test_epoch_time_and_distill_ratio_on_tiny_config():
  c = tiny()
  dataset = workdir.load_data(c)
  r = speed.epoch_time(dataset, c, objective="window", batch_size=8, steps=3, warmup=1)
  # One epoch = the batches an epoch of training really yields (not a formula of its own).
  assert r["steps_per_epoch"] == sum(1 for _ in window_batches(dataset.train, 8, c.data.max_len))
  assert r["seconds_per_step"] > 0
  assert math.isclose(r["seconds_per_epoch"], r["seconds_per_step"] * r["steps_per_epoch"])
  p = speed.epoch_time(dataset, c, objective="prefix", batch_size=8, steps=3, warmup=1)
  assert p["steps_per_epoch"] == -(-len(dataset.train_examples(c.data.max_len).targets) // 8)
  d = speed.distill_step_ratio(dataset, c, steps=3, warmup=1)
  # At the distillation stage's batch (tiny: distill.batch_size=16, train.batch_size=32).
  assert c.distill.batch_size != c.train.batch_size
  assert d["steps"] == 3 and d["batch_size"] == c.distill.batch_size
  assert d["teacher_seconds_per_step"] > 0 and d["distill_seconds_per_step"] > 0
  assert math.isclose(d["ratio"], d["distill_seconds_per_step"] / d["teacher_seconds_per_step"])
  assert d["student_seconds_per_step"] > 0
  assert math.isclose(d["two_models_ratio"],
                      1 + d["student_seconds_per_step"] / d["teacher_seconds_per_step"])
