"""Restore a workdir's trained models from their best checkpoints; evaluate and rank them.

Uses the same evaluators as training. The teacher and the student are taken
from the last stage that trained them (distill, else teacher / student_pretrain),
each at its best validation epoch; `workdir_ranks` can also rank them as the stages
before distillation left them ('stage1_teacher', 'pretrained_student'). `restore(workdir)`
is what other tools build on (export): the dataset and each trained model's spec and
variables.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from ccrec import atomic
from ccrec.checkpoint import Checkpointer, CheckpointError
from ccrec.data import SessionDataset
from ccrec.models.build import model_fns
from ccrec.models.recommender import ModelSpec, init_variables
from ccrec.models.views import DistillHeads
from ccrec.train import distill as distill_lib
from ccrec.train.state import TrainState
from ccrec.workflow import pipeline
from ccrec.workflow import workdir as workdir_lib

MODELS = ("teacher", "student")
# The models as the stages before distillation left them: name -> (model, stage directory).
BEFORE_DISTILL = {
    "stage1_teacher": ("teacher", "teacher"),
    "pretrained_student": ("student", "student_pretrain"),
}
RANKABLE = MODELS + tuple(BEFORE_DISTILL)


@dataclasses.dataclass(frozen=True)
class Restored:
  """A workdir's dataset and trained models, at their best checkpoints."""

  config: ml_collections.ConfigDict
  dataset: SessionDataset
  models: dict[str, tuple[ModelSpec, dict]]  # 'teacher'/'student' -> (spec, variables), if trained


def restore_trained(ctx: pipeline.Context, *, before_distill: bool = False) -> pipeline.Trained:
  """Rebuilds the trained models of a workdir from their best checkpoints.

  `before_distill` skips the distill stage's checkpoint: the teacher as the teacher stage
  left it and the student as pre-training left it.
  """
  c = ctx.config
  tx = ctx.optimizer()
  teacher0 = TrainState.create(init_variables(ctx.teacher, jax.random.key(0)), tx)
  student0 = TrainState.create(pipeline.init_student(ctx, None), tx, ema_decay=c.student.ema_decay)
  out = pipeline.Trained()
  distill_dir = ctx.stage_dir("distill")
  distilled = os.path.isdir(distill_dir) and (
      Checkpointer(distill_dir).latest_step("best") is not None
  )
  if distilled and not before_distill:
    heads = DistillHeads(c.model.d, c.model.readout, c.model.init, c.model.init_scale)
    abstract = distill_lib.create_state(
        teacher0.variables(),
        student0.variables(),
        heads,
        jax.random.key(0),
        c.data.max_len,
        tx,
        student_ema_decay=c.student.ema_decay,
    )
    state, _ = Checkpointer(distill_dir).restore(ctx.place(abstract), "best")  # mesh layout
    out.teacher, out.student = state.teacher, state.student
    return out
  for stage, attr, abstract in (
      ("teacher", "teacher", teacher0),
      ("student_pretrain", "student", student0),
  ):
    path = ctx.stage_dir(stage)
    if os.path.isdir(path):
      restored = Checkpointer(path).restore(ctx.place(abstract), "best")
      if restored is not None:
        setattr(out, attr, restored[0])
  if out.teacher is None and out.student is None:
    raise CheckpointError(
        f"no checkpoint found under {ctx.workdir} (looked in teacher/, "
        "student_pretrain/, distill/): train into this workdir first"
    )
  return out


def saved_context(workdir: str) -> pipeline.Context:
  """The context of a trained workdir: its saved config and data."""
  return pipeline.make_context(workdir_lib.load_config(workdir), workdir, check_workdir=False)


def restored_context(workdir: str) -> tuple[pipeline.Context, pipeline.Trained]:
  """The context of a trained workdir (its saved config and data) and its trained models."""
  ctx = saved_context(workdir)
  return ctx, restore_trained(ctx)


def restore(workdir: str) -> Restored:
  """The dataset and each trained model's spec and variables of `workdir`."""
  ctx, trained = restored_context(workdir)
  models = {
      name: (getattr(ctx, name).spec, getattr(trained, name).variables())
      for name in MODELS
      if getattr(trained, name) is not None
  }
  return Restored(config=ctx.config, dataset=ctx.dataset, models=models)


def evaluate_workdir(workdir: str, splits=("valid", "test")) -> dict[str, Any]:
  """Evaluates the best checkpoints of `workdir`; writes and returns WORKDIR/eval.json's dict."""
  ctx, trained = restored_context(workdir)
  metrics = pipeline.report(ctx, trained, splits)
  if jax.process_index() == 0:
    atomic.write_json(os.path.join(workdir, workdir_lib.EVAL_FILE), metrics)
  return metrics


def workdir_ranks(
    workdir: str, models: Sequence[str], split: str = "test"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Per-example target ranks of models of `workdir` on `split`, from their best checkpoints.

  The workdir's dataset and checkpoints are loaded once for all `models`: 'teacher' and
  'student' (the compressed model alone) from the last stage that trained them,
  'stage1_teacher' and 'pretrained_student' from the teacher and student_pretrain stages
  (in a workdir that ran distillation: the models before it). Returns ({model: ranks int64
  [N]}, targets int32 [N]) in the split's example order (the targets let a caller check
  that two workdirs were ranked on the same examples).
  """
  for model in models:
    if model not in RANKABLE:
      raise ValueError(f"model must be one of {RANKABLE}, got {model!r}")
  if split not in ("valid", "test"):
    raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
  ctx = saved_context(workdir)
  examples = {"valid": ctx.dataset.valid, "test": ctx.dataset.test}[split]
  trained = {}  # before_distill -> pipeline.Trained, each restored once
  ranks = {}
  for model in models:
    name, stage = BEFORE_DISTILL.get(model, (model, None))
    before = stage is not None
    if before not in trained:
      trained[before] = restore_trained(ctx, before_distill=before)
    state = getattr(trained[before], name)
    if state is None:
      where = f" in {stage}/" if before else ""
      raise CheckpointError(
          f"{workdir} has no trained {model} checkpoint{where} "
          f"(its config's stages: {list(ctx.config.stages)})"
      )
    evaluator = ctx.evaluator(name, *model_fns(getattr(ctx, name)))
    ranks[model] = evaluator.ranks(state.variables(), examples)
  return ranks, np.asarray(examples.targets)
