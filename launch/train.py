r"""Trains the stages of a config in a workdir and prints the final metrics as JSON.

  python launch/train.py --config=configs/eodrec.py --workdir=runs/eodrec \
      [--config.train.batch_size=128 --config.distill.batch_size=256 ...]

Rerunning the same command resumes where a killed run stopped. Several devices are used
through config.parallel; several hosts with --distributed (launch/gpu.sh, launch/tpu.sh).

stderr shows a line per epoch of each stage, a progress line, and at the end a table of
the models' validation and test metrics; stdout gets the metrics as one JSON object.
Every logged value is in WORKDIR/metrics.jsonl. Libraries' INFO messages (orbax's
checkpointing, jax's backend probing) are hidden unless --verbose_libs; per-step lines
(config.train.log_every) show with -v=1.
"""

import json
import sys

import _distributed
import _errors
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ccrec import console
from ccrec.workflow import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # -v=1 (debug) keeps its value
    logging.set_verbosity(logging.INFO)
  _distributed.maybe_initialize()
  metrics = pipeline.run(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    table = console.results_table(metrics)
    if table:
      print(f"\n{table}\n", file=sys.stderr, flush=True)
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
  _errors.run(main)
