r"""Trains the stages of a config in a workdir and prints the final metrics as JSON.

  python launch/train.py --config=configs/eodrec.py --workdir=runs/eodrec \
      [--config.train.batch_size=128 ...]

Rerunning the same command resumes where a killed run stopped. Several devices are used
through config.parallel; several hosts with --distributed (launch/gpu.sh, launch/tpu.sh).
"""

import json

import _paths  # noqa: F401  (puts the repo root on sys.path)
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ccrec.train import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-host (docs/scale_out.md). Flags, not config fields: config.json must be the same for
# every process and every resumption. On TPU pod slices --distributed alone is enough.
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() before touching devices.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "",
                                   "host:port of process 0 ('' = auto-detect, e.g. on TPU).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes (0 = auto).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (-1 = auto).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  if _DISTRIBUTED.value or _COORDINATOR.value:
    from ccrec import parallel
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  metrics = pipeline.run(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
