r"""Training speed on ml-100k, side by side (BENCHMARKS.md).

  python launch/benchmark_train.py --config=configs/teacher.py --steps=30
  python launch/benchmark_train.py --mode=distill --config=configs/eodrec.py --steps=30

Prints a markdown table: seconds per epoch (median step time x steps per
epoch; compile excluded) for the config's own step (with its R-Drop pass, if
train.rdrop > 0, and its fused loss, if train.fused_chunk > 0, then the same
step on materialised logits), then the plain cross-entropy step of the window
objective (strides 50 and 10) and of the per-prefix objective (RecBole's), all
at the config's model sizes. With
--mode=distill: the cost of one distillation step (teacher + student forwards
and every loss term) relative to a teacher-only step on the same batches.
"""

import _errors
from absl import flags
from ml_collections import config_flags

from ccrec.benchmarks import speed
from ccrec.workflow import workdir

_CONFIG = config_flags.DEFINE_config_file("config", "configs/teacher.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per setting.")
_MODE = flags.DEFINE_enum(
    "mode",
    "objectives",
    ["objectives", "distill"],
    "objectives: teacher epoch time per objective; distill: " "distillation step vs teacher step.",
)


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


if __name__ == "__main__":
  _errors.run(main)
