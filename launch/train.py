r"""Trains the stages of a config in a workdir and prints the final metrics as JSON.

  python launch/train.py --config=configs/eodrec.py --workdir=runs/eodrec \
      [--config.train.batch_size=128 --config.distill.batch_size=256 ...]

Rerunning the same command resumes where a killed run stopped. Several devices are used
through config.parallel; several hosts with --distributed (launch/gpu.sh, launch/tpu.sh).
"""

import json

import _distributed
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ccrec.train import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  _distributed.maybe_initialize()
  metrics = pipeline.run(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
