r"""Teacher training speed on ml-100k, objectives side by side (BENCHMARKS.md).

  python launch/benchmark_train.py --config=configs/teacher.py --steps=30

Prints a markdown table: seconds per epoch (median step time x steps per
epoch; compile excluded) for the window objective (strides 50 and 10) and the
per-prefix objective (RecBole's), all at the config's model sizes.
"""

import _paths  # noqa: F401  (puts the repo root on sys.path)
from absl import app, flags
from ml_collections import config_flags

from ccrec.train import speed, workdir

_CONFIG = config_flags.DEFINE_config_file("config", "configs/teacher.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per setting.")


def main(argv):
  del argv
  c = _CONFIG.value
  dataset = workdir.load_data(c)
  settings = [("window", c.train.batch_size, None), ("window", 64, 10), ("prefix", 256, None)]
  print("| objective | stride | batch | steps/epoch | s/step | s/epoch | targets/s |")
  print("|---|---|---|---|---|---|---|")
  for objective, batch, stride in settings:
    r = speed.epoch_time(dataset, c, objective=objective, batch_size=batch, stride=stride,
                         steps=_STEPS.value)
    print(f"| {r['objective']} | {r['stride'] if objective == 'window' else '-'} | {batch} | "
          f"{r['steps_per_epoch']} | {r['seconds_per_step']:.3f} | "
          f"{r['seconds_per_epoch']:.1f} | {r['targets_per_second']:.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
