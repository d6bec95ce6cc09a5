r"""Evaluates a workdir's best checkpoints on validation and test; prints and writes eval.json.

  python launch/evaluate.py --workdir=runs/eodrec
"""

import json

import _paths  # noqa: F401  (puts the repo root on sys.path)
from absl import app, flags

from ccrec.evaluation.from_checkpoint import evaluate_workdir

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by launch/train.py.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(json.dumps(evaluate_workdir(_WORKDIR.value), indent=1, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
