r"""Evaluates a workdir's best checkpoints on validation and test; prints and writes eval.json.

  python launch/evaluate.py --workdir=runs/eodrec

On several hosts, run it on every process with the multi-host flags of launch/train.py
(--distributed, or --coordinator_address/--num_processes/--process_id); every process
restores its shards of the checkpoint, process 0 prints and writes eval.json.
"""

import json

import _distributed
import _errors
import jax
from absl import app, flags

from ccrec.workflow.from_checkpoint import evaluate_workdir

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by launch/train.py.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _distributed.maybe_initialize()
  metrics = evaluate_workdir(_WORKDIR.value)
  if jax.process_index() == 0:
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
  _errors.run(main)
