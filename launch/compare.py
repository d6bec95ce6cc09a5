r"""Paired comparison of two trained models on the same examples; prints one JSON object.

  python launch/compare.py --a=runs/eodrec:teacher --b=runs/eodrec:student
  python launch/compare.py --a=runs/eodrec:stage1_teacher --b=runs/eodrec:student
  python launch/compare.py --a=runs/base:student --b=runs/full:student --metrics=NDCG@10,HR@10
  python launch/compare.py --a=runs/s1:teacher,runs/s2:teacher,runs/s3:teacher \
      --b=runs/s1:student,runs/s2:student,runs/s3:student     # seeds pooled

Each side is WORKDIR:MODEL with MODEL 'teacher' or 'student' (the compressed model
alone), restored at its best checkpoint as launch/evaluate.py does (in a workdir that
ran distillation, 'teacher' is the co-trained teacher), or 'stage1_teacher' or
'pretrained_student': the model at the best checkpoint of the teacher stage or of the
student's pre-training, before distillation changed it. Both are ranked on --split and
compared example by example: for each metric, the means, their standard errors, the
difference b - a with its paired-bootstrap confidence interval and p-value
(ccrec/evaluation/significance.py), and the ratio b / a with its interval. The two
workdirs must hold the same dataset.

Several runs per side (comma-separated, paired in order: a seed's teacher with the same
seed's student) are averaged example by example; the intervals then measure the test
examples' sampling of the seed-averaged models (the runs held fixed).

On several hosts, run it on every process with the multi-host flags of launch/train.py;
process 0 prints.
"""

import json

import _distributed
import _errors
import jax
import numpy as np
from absl import app, flags

from ccrec.evaluation import significance
from ccrec.workflow.from_checkpoint import RANKABLE, workdir_ranks

_A = flags.DEFINE_list("a", None, "WORKDIR:MODEL of the reference model (several: runs of it).")
_B = flags.DEFINE_list(
    "b",
    None,
    "WORKDIR:MODEL of the model compared with it (diff = b - a); "
    "as many as --a, paired in order.",
)
_SPLIT = flags.DEFINE_enum("split", "test", ["valid", "test"], "Split to rank.")
_METRICS = flags.DEFINE_list("metrics", ["NDCG@10", "HR@10", "MRR@10"], "HR@k, MRR@k, NDCG@k.")
_SAMPLES = flags.DEFINE_integer("samples", 10_000, "Bootstrap resamples.")
_CONFIDENCE = flags.DEFINE_float("confidence", 0.95, "Level of the confidence interval.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resamples.")
flags.mark_flags_as_required(["a", "b"])


def _side(spec: str, flag: str) -> tuple[str, str]:
  workdir, sep, model = spec.rpartition(":")
  if not sep or not workdir or model not in RANKABLE:
    raise app.UsageError(f"--{flag}={spec!r}: expected WORKDIR:MODEL with MODEL one of {RANKABLE}")
  return workdir, model


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for metric in _METRICS.value:  # a misspelt metric fails before any model is restored
    try:
      significance.per_example(np.zeros(1, np.int64), metric)
    except ValueError as e:
      raise app.UsageError(f"--metrics: {e}") from e
  if len(_A.value) != len(_B.value) or not _A.value:
    raise app.UsageError(
        f"--a names {len(_A.value or [])} runs and --b {len(_B.value or [])}: "
        "give the same number (>= 1), paired in order"
    )
  sides = [(_side(a, "a"), _side(b, "b")) for a, b in zip(_A.value, _B.value)]
  _distributed.maybe_initialize()
  runs_a, runs_b, first = [], [], None
  for (dir_a, model_a), (dir_b, model_b) in sides:
    if dir_a == dir_b:  # e.g. teacher against student: load the workdir once
      ranks, targets_a = workdir_ranks(dir_a, (model_a, model_b), _SPLIT.value)
      ranks_a, ranks_b = ranks[model_a], ranks[model_b]
    else:
      ranks, targets_a = workdir_ranks(dir_a, (model_a,), _SPLIT.value)
      ranks_a = ranks[model_a]
      ranks, targets_b = workdir_ranks(dir_b, (model_b,), _SPLIT.value)
      ranks_b = ranks[model_b]
      significance.check_same_examples(targets_a, targets_b, dir_a, dir_b)
    if first is None:
      first = (dir_a, targets_a)
    else:
      significance.check_same_examples(first[1], targets_a, first[0], dir_a)
    runs_a.append(ranks_a)
    runs_b.append(ranks_b)
  ranks_a, ranks_b = np.stack(runs_a), np.stack(runs_b)  # [runs, N]; one run is [1, N]
  out = {
      "a": ",".join(_A.value),
      "b": ",".join(_B.value),
      "split": _SPLIT.value,
      "n": int(ranks_a.shape[-1]),
      "runs": len(sides),
  }
  for metric in _METRICS.value:
    result = significance.compare(
        ranks_a,
        ranks_b,
        metric,
        num_samples=_SAMPLES.value,
        confidence=_CONFIDENCE.value,
        seed=_SEED.value,
    )
    out[metric] = {k: v for k, v in result.to_dict().items() if k not in ("metric", "n", "runs")}
  if jax.process_index() == 0:
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
  _errors.run(main)
