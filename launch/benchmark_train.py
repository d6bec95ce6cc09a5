r"""Training speed, side by side (BENCHMARKS.md).

  python launch/benchmark_train.py --config=configs/teacher.py --steps=30
  python launch/benchmark_train.py --mode=distill --config=configs/eodrec.py --steps=30
  python launch/benchmark_train.py --mode=loss --config=configs/synthetic_40k.py \
      --config.train.objective=window --steps=20

Prints a markdown table: seconds per epoch (median step time x steps per
epoch; compile excluded) for the config's own step (with its R-Drop pass, if
train.rdrop > 0, and its fused loss, if train.fused_chunk > 0, then the same
step on materialised logits), then the plain cross-entropy step of the window
objective (strides 50 and 10) and of the per-prefix objective (RecBole's), all
at the config's model sizes. With
--mode=distill: the cost of one distillation step (teacher + student forwards
and every loss term) relative to a teacher-only step on the same batches. With
--mode=loss: the config's teacher step (objective, batch) with the full softmax and
with the sampled one (train.num_negatives popularity draws), with batches at
max_len and, if train.length_bucket > 0, cut to their longest row; the settings
interleaved in rounds of --steps steps.
"""

import _errors
import numpy as np
from absl import flags
from ml_collections import config_flags

from ccrec.benchmarks import speed
from ccrec.workflow import workdir

_CONFIG = config_flags.DEFINE_config_file("config", "configs/teacher.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per setting.")
_MODE = flags.DEFINE_enum(
    "mode",
    "objectives",
    ["objectives", "distill", "loss"],
    "objectives: teacher epoch time per objective; distill: distillation step vs teacher "
    "step; loss: full vs sampled softmax.",
)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "--mode=loss: interleaved rounds per loss.")


def main(argv):
  del argv
  c = _CONFIG.value
  dataset = workdir.load_data(c)
  if _MODE.value == "distill":
    r = speed.distill_step_ratio(dataset, c, steps=_STEPS.value)
    print(
        "| batch | teacher s/step | student s/step | distillation s/step | ratio | "
        "(teacher + student) / teacher |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {r['batch_size']} | {r['teacher_seconds_per_step']:.4f} | "
        f"{r['student_seconds_per_step']:.4f} | {r['distill_seconds_per_step']:.4f} | "
        f"{r['ratio']:.2f} | {r['two_models_ratio']:.2f} |"
    )
    return
  if _MODE.value == "loss":
    _losses(dataset, c)
    return
  # The config's step (and, if it is fused, the same step on materialised logits), then
  # the plain cross-entropy step (RecBole's loss) per objective, not fused.
  own = ("window", c.train.batch_size, None, c.train.rdrop, c.train.fused_chunk)
  settings = [own] if c.train.rdrop or c.train.fused_chunk else []
  if c.train.fused_chunk:
    settings.append(own[:4] + (0,))
  settings += [
      ("window", c.train.batch_size, None, 0.0, 0),
      ("window", 64, 10, 0.0, 0),
      ("prefix", 256, None, 0.0, 0),
  ]
  settings = list(dict.fromkeys(settings))  # a fused plain config's unfused row is the plain one
  print(
      "| objective | stride | batch | R-Drop | fused chunk | steps/epoch | s/step | s/epoch | "
      "targets/s |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for objective, batch, stride, rdrop, chunk in settings:
    r = speed.epoch_time(
        dataset,
        c,
        objective=objective,
        batch_size=batch,
        stride=stride,
        rdrop=rdrop,
        fused_chunk=chunk,
        steps=_STEPS.value,
    )
    print(
        f"| {r['objective']} | {r['stride'] if objective == 'window' else '-'} | {batch} | "
        f"{rdrop or 'off'} | {chunk or 'off'} | {r['steps_per_epoch']} | "
        f"{r['seconds_per_step']:.3f} | {r['seconds_per_epoch']:.1f} | "
        f"{r['targets_per_second']:.0f} |",
        flush=True,
    )


def _losses(dataset, c):
  """Full vs sampled softmax for the config's step (and, with train.length_bucket > 0,
  the same at max_len), rounds interleaved, medians."""
  buckets = [0] + ([c.train.length_bucket] if c.train.length_bucket else [])
  settings = [(loss, b) for b in buckets for loss in ("full", "sampled")]
  times = {s: [] for s in settings}
  for _ in range(_ROUNDS.value):
    for loss, bucket in settings:
      r = speed.epoch_time(
          dataset,
          c,
          objective=c.train.objective,
          batch_size=c.train.batch_size,
          stride=c.train.window_stride or None,
          rdrop=0.0,
          fused_chunk=0,
          loss=loss,
          length_bucket=bucket,
          steps=_STEPS.value,
      )
      times[(loss, bucket)].append(r)
  print(f"items {dataset.num_items}, objective {c.train.objective}, batch {c.train.batch_size}")
  print("| loss | length bucket | steps/epoch | s/step (per round) | s/epoch | vs the slowest |")
  print("|---|---|---|---|---|---|")
  epoch = {k: float(np.median([r["seconds_per_epoch"] for r in v])) for k, v in times.items()}
  slowest = max(epoch.values())
  for (loss, bucket), rows in times.items():
    per_step = ", ".join(f"{r['seconds_per_step']:.4f}" for r in rows)
    label = loss if loss == "full" else f"sampled ({c.train.num_negatives} negatives)"
    print(
        f"| {label} | {bucket or 'off'} | {rows[0]['steps_per_epoch']} | {per_step} | "
        f"{epoch[(loss, bucket)]:.1f} | {slowest / epoch[(loss, bucket)]:.2f}x |",
        flush=True,
    )


if __name__ == "__main__":
  _errors.run(main)
