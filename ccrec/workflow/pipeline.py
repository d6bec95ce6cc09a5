"""The EODRec pipeline: teacher -> codes -> student pre-training -> distillation.

Each stage checkpoints under WORKDIR/<stage>/ and a finished stage is restored,
not retrained, so rerunning a killed command resumes at the stage and epoch
where it stopped. `run` trains what config.stages asks for and returns the
final validation/test metrics of every trained model.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from ccrec import config as config_lib
from ccrec import data as data_lib
from ccrec import parallel
from ccrec.checkpoint import Checkpointer
from ccrec.data import SessionDataset, hot_mask, prefix_batches, window_batches
from ccrec.evaluation.evaluator import Evaluator
from ccrec.models.build import build_models, model_fns
from ccrec.models.codes import compression_stats, set_codes
from ccrec.models.embeddings import with_item_table
from ccrec.models.recommender import SessionRecommender, init_variables
from ccrec.models.tt import tt_bytes
from ccrec.models.views import DistillHeads
from ccrec.ops import sampled
from ccrec.train import distill as distill_lib
from ccrec.train import teacher as teacher_lib
from ccrec.train.loop import fit
from ccrec.train.state import TrainState, make_optimizer
from ccrec.train.writer import MetricWriter
from ccrec.workflow import codes_stage
from ccrec.workflow import workdir as workdir_lib


@dataclasses.dataclass
class Context:
  """What every stage needs: config, data, models, key, writer."""

  config: ml_collections.ConfigDict
  workdir: str
  dataset: SessionDataset
  hot: np.ndarray  # bool [V + 1]
  teacher: SessionRecommender
  student: SessionRecommender
  key: jax.Array
  writer: MetricWriter
  _train_examples: Any = None  # prefix-augmented training set, built on first use
  _evaluators: dict = dataclasses.field(default_factory=dict)
  mesh: Any = None  # jax.sharding.Mesh for data/item parallelism (None: single device)

  def to_device(self, batch: dict) -> Any:
    """Puts a host batch on the device(s): sharded along the mesh's data axis if any."""
    if self.mesh is None:
      return batch
    return parallel.shard_batch(batch, self.mesh)

  def place(self, state: Any) -> Any:
    """Places a train state on the device(s): replicated (items sharded when configured)."""
    if self.mesh is None:
      return state
    return parallel.place_state(state, self.mesh)

  def stage_dir(self, stage: str) -> str:
    return workdir_lib.stage_dir(self.workdir, stage)

  def batches(self, epoch: int, seed_offset: int = 0, batch_size: int | None = None):
    """The epoch's shuffled training batches (`batch_size` defaults to train.batch_size)."""
    c = self.config
    seed = c.seed + seed_offset
    batch_size = batch_size or c.train.batch_size
    if c.train.objective == "window":
      return window_batches(
          self.dataset.train,
          batch_size,
          c.data.max_len,
          shuffle=True,
          seed=seed,
          epoch=epoch,
          stride=c.train.window_stride or None,
          length_bucket=c.train.length_bucket,
      )
    if self._train_examples is None:
      self._train_examples = self.dataset.train_examples(c.data.max_len)
    return prefix_batches(
        self._train_examples,
        batch_size,
        c.data.max_len,
        shuffle=True,
        seed=seed,
        epoch=epoch,
        length_bucket=c.train.length_bucket,
    )

  def steps_per_epoch(self, batch_size: int | None = None) -> int:
    """Optimizer steps in one epoch of `batches` (sets the per-epoch learning-rate decay)."""
    c = self.config
    return data_lib.steps_per_epoch(
        self.dataset.train,
        c.train.objective,
        batch_size or c.train.batch_size,
        c.data.max_len,
        c.train.window_stride or None,
    )

  def optimizer(self, batch_size: int | None = None):
    return make_optimizer(self.config.train, self.steps_per_epoch(batch_size))

  def evaluator(self, name: str, encode, score) -> Evaluator:
    """One Evaluator (one compiled eval step) per model name and context."""
    if name in self._evaluators:
      return self._evaluators[name]
    c = self.config
    self._evaluators[name] = Evaluator(
        name,
        encode,
        score,
        num_items=self.dataset.num_items,
        hot=self.hot,
        batch_size=c.eval.batch_size,
        max_len=c.data.max_len,
        item_chunk=c.eval.item_chunk,
        to_device=self.to_device,
    )
    return self._evaluators[name]


def make_context(
    config: ml_collections.ConfigDict, workdir: str, *, check_workdir: bool = True
) -> Context:
  # Everything that can reject the config or the data runs before the workdir is written,
  # so a bad value or dataset leaves no config.json behind to refuse the corrected command.
  config_lib.validate(config)
  # Another experiment's workdir is refused before minutes of data loading.
  saved = workdir_lib.check_config(workdir, config) if check_workdir else True
  dataset = workdir_lib.load_data(config)
  hot = hot_mask(dataset.item_counts, config.data.hot_fraction)
  if not 0 < hot.sum() < dataset.num_items:
    raise ValueError(
        f"config.data.hot_fraction: {config.data.hot_fraction} marks {int(hot.sum())} of the "
        f"{dataset.num_items} items as hot; the hot/cold split needs both (use a fraction in "
        f"[1/{dataset.num_items}, 1 - 1/{dataset.num_items}])"
    )
  teacher, student = build_models(config, dataset.num_items)
  # A mesh whenever there are several devices (or an item axis is asked for); every process
  # feeds its rows of each global batch through Context.to_device -> parallel.shard_batch.
  mesh = parallel.default_mesh(config.parallel.data, config.parallel.model)
  # distill.batch_size 0 (= train.batch_size) passes when train.batch_size does.
  parallel.check_sizes(
      {
          "train.batch_size": config.train.batch_size,
          "eval.batch_size": config.eval.batch_size,
          "distill.batch_size": config_lib.distill_batch_size(config),
      },
      mesh,
      dataset.num_items,
  )
  logging.info("devices: %s", parallel.describe(mesh))
  if not saved:
    workdir_lib.save_config(workdir, config)
  workdir_lib.check_dataset(workdir, dataset)
  return Context(
      config=config,
      workdir=workdir,
      dataset=dataset,
      hot=hot,
      teacher=teacher,
      student=student,
      key=jax.random.key(config.seed),
      writer=MetricWriter(os.path.join(workdir, workdir_lib.METRICS_FILE)),
      mesh=mesh,
  )


# ---------------------------------------------------------------------------- encode/score fns


def mixed_fns(teacher: SessionRecommender, student: SessionRecommender, eta: float):
  """The student on its mixup table (NOT compressed: it needs the teacher's table)."""

  def table(v):
    t_vars, s_vars = v
    return distill_lib.mixup_table(
        teacher.apply(t_vars, method="table"), student.apply(s_vars, method="table"), eta
    )

  encode = lambda v, items: student.apply(v[1], items, table=table(v))["session"]
  score = lambda v, s, ids: student.apply(v[1], s, ids, table=table(v), method="score")
  return encode, score


def _select(config) -> str:
  return config.train.select_metric


# ---------------------------------------------------------------------------- stages


def train_teacher(ctx: Context) -> TrainState:
  c = ctx.config
  key = jax.random.fold_in(ctx.key, 0)
  tx = ctx.optimizer()  # one object: both traces of the sharded init see the same
  state = ctx.place(
      parallel.create_sharded(  # an item table split over 'model' is born split
          lambda k: TrainState.create(init_variables(ctx.teacher, k), tx),
          ctx.mesh,
          jax.random.fold_in(key, 0),
      )
  )
  step = teacher_lib.make_train_step(
      ctx.teacher,
      c.train.objective,
      label_smoothing=c.train.label_smoothing,
      rdrop=c.train.rdrop,
      rdrop_detach=c.train.rdrop_detach,
      fused_chunk=c.train.fused_chunk,
      sampler=sampled.from_config(c.train, ctx.dataset.item_counts),
  )
  evaluator = ctx.evaluator("teacher", *model_fns(ctx.teacher))
  result = fit(
      stage="teacher",
      state=state,
      train_step=step,
      batches=ctx.batches,
      evaluate=lambda s: evaluator.evaluate(s.variables(), "valid", ctx.dataset.valid),
      select=f"teacher/valid/{_select(c)}",
      checkpointer=Checkpointer(ctx.stage_dir("teacher")),
      writer=ctx.writer,
      key=jax.random.fold_in(key, 1),
      epochs=c.train.epochs,
      patience=c.train.patience,
      log_every=c.train.log_every,
      to_device=ctx.to_device,
  )
  return result.state


def learn_codes(ctx: Context, teacher_state: TrainState) -> dict[str, np.ndarray]:
  """Stage 'codes' (`codes_stage.learn_codes`) on the teacher's table; a rerun reads them back."""
  c = ctx.config
  saved = codes_stage.read_codes(
      ctx.stage_dir("codes"),
      ctx.dataset.num_items,
      c.codes.num_codebooks,
      c.codes.codebook_size,
      c.model.d,
  )
  if saved is not None:
    return saved
  # Gathered from every process when the table is split across hosts; each
  # process then learns the same codes (same table, same seed), process 0 writes.
  table = parallel.to_host(ctx.teacher.apply(teacher_state.variables(), method="table"))
  return codes_stage.learn_codes(
      ctx.stage_dir("codes"),
      table,
      ctx.dataset.item_counts,
      c.codes,
      seed=c.seed,
      evaluate=teacher_on_table(ctx, teacher_state),
      writer=ctx.writer,
  )


def teacher_on_table(ctx: Context, teacher_state: TrainState) -> codes_stage.EvaluateFn:
  """table [V+1, d] -> the teacher's validation metrics with its item table replaced by it."""
  evaluator = ctx.evaluator("teacher", *model_fns(ctx.teacher))
  return lambda table: evaluator.evaluate(
      with_item_table(teacher_state.variables(), table), "valid", ctx.dataset.valid
  )


def init_student(ctx: Context, codes: dict[str, np.ndarray] | None) -> dict:
  """Fresh student variables with the learned codes and codebooks put in."""
  variables = init_variables(ctx.student, jax.random.fold_in(ctx.key, 2))
  if codes is None:
    return variables
  try:
    return set_codes(variables, codes["codes"], codes["codebooks"])
  except ValueError as e:
    raise ValueError(
        f"the learned codes in {ctx.stage_dir('codes')} do not fit the student "
        f"(did config.codes change since the codes stage ran?): {e}"
    ) from e


def warm_start(student_vars: dict, teacher_state: TrainState) -> dict:
  """The student's variables with every non-embedding parameter copied from the teacher.

  The encoder and readout have the same shapes in both models; only the item
  embeddings differ (the student keeps its codes and codebooks).
  """
  params = dict(student_vars["params"])
  for name, value in teacher_state.variables()["params"].items():
    if name != "items":  # copies: the student's train step donates (frees) its buffers
      params[name] = jax.tree.map(jnp.copy, value)
  return dict(student_vars, params=params)


def pretrain_student(ctx: Context, teacher_state: TrainState, codes) -> TrainState:
  c = ctx.config
  variables = init_student(ctx, codes)
  if c.student.init_from_teacher:
    variables = warm_start(variables, teacher_state)
  state = ctx.place(TrainState.create(variables, ctx.optimizer(), ema_decay=c.student.ema_decay))
  teacher_table = ctx.teacher.apply(teacher_state.variables(), method="table")
  step = distill_lib.make_pretrain_step(
      ctx.student,
      c.train.objective,
      mixup=c.student.mixup,
      eta=c.student.eta,
      mse_weight=c.student.mse_weight,
      eta_decay_steps=c.student.eta_decay_epochs * ctx.steps_per_epoch(),
      label_smoothing=c.train.label_smoothing,
      rdrop=c.student.rdrop,
      fused_chunk=c.train.fused_chunk,
      sampler=sampled.from_config(c.train, ctx.dataset.item_counts),
  )
  evaluator = ctx.evaluator("student", *model_fns(ctx.student))
  result = fit(
      stage="student_pretrain",
      state=state,
      train_step=lambda s, b, k: step(s, teacher_table, b, k),
      batches=lambda e: ctx.batches(e, seed_offset=1),
      evaluate=lambda s: evaluator.evaluate(s.variables(), "valid", ctx.dataset.valid),
      select=f"student/valid/{_select(c)}",
      checkpointer=Checkpointer(ctx.stage_dir("student_pretrain")),
      writer=ctx.writer,
      key=jax.random.fold_in(ctx.key, 3),
      epochs=c.student.pretrain_epochs,
      patience=c.train.patience,
      log_every=c.train.log_every,
      to_device=ctx.to_device,
  )
  return result.state


def distill(
    ctx: Context, teacher_state: TrainState, student_state: TrainState
) -> distill_lib.DistillState:
  c = ctx.config
  batch_size = config_lib.distill_batch_size(c)
  heads = DistillHeads(c.model.d, c.model.readout, c.model.init, c.model.init_scale)
  state = ctx.place(
      distill_lib.create_state(
          teacher_state.variables(),
          student_state.variables(),
          heads,
          jax.random.fold_in(ctx.key, 4),
          c.data.max_len,
          ctx.optimizer(batch_size),
          student_ema_decay=c.student.ema_decay,
      )
  )
  step = distill_lib.make_distill_step(
      ctx.teacher,
      ctx.student,
      heads,
      ctx.hot,
      c.distill,
      c.student,
      c.train.objective,
      label_smoothing=c.train.label_smoothing,
      sampler=sampled.from_config(c.train, ctx.dataset.item_counts),
  )
  evaluator = ctx.evaluator("student", *model_fns(ctx.student))
  result = fit(
      stage="distill",
      state=state,
      train_step=step,
      batches=lambda e: ctx.batches(e, seed_offset=2, batch_size=batch_size),
      evaluate=lambda s: evaluator.evaluate(s.student.variables(), "valid", ctx.dataset.valid),
      select=f"student/valid/{_select(c)}",
      checkpointer=Checkpointer(ctx.stage_dir("distill")),
      writer=ctx.writer,
      key=jax.random.fold_in(ctx.key, 5),
      epochs=c.distill.epochs,
      patience=c.train.patience,
      log_every=c.train.log_every,
      to_device=ctx.to_device,
  )
  return result.state


# ---------------------------------------------------------------------------- reporting


@dataclasses.dataclass
class Trained:
  teacher: TrainState | None = None
  student: TrainState | None = None  # the final student (after distillation if it ran)


def train(ctx: Context) -> Trained:
  stages = ctx.config.stages
  out = Trained()
  if "teacher" in stages:
    out.teacher = train_teacher(ctx)
  codes = None
  if "codes" in stages and ctx.config.student.embedding == "codes":
    codes = learn_codes(ctx, out.teacher)
  if "student_pretrain" in stages:
    out.student = pretrain_student(ctx, out.teacher, codes)
  if "distill" in stages and ctx.config.distill.enabled:
    final = distill(ctx, out.teacher, out.student)
    out.teacher, out.student = final.teacher, final.student
  return out


def report(ctx: Context, trained: Trained, splits=("valid", "test")) -> dict[str, Any]:
  """Metrics of every trained model on `splits`, plus the student's compression figures."""
  data = {"valid": ctx.dataset.valid, "test": ctx.dataset.test}
  metrics: dict[str, Any] = {}
  jobs = []
  if trained.teacher is not None:
    jobs.append((ctx.evaluator("teacher", *model_fns(ctx.teacher)), trained.teacher.variables()))
  if trained.student is not None:
    jobs.append((ctx.evaluator("student", *model_fns(ctx.student)), trained.student.variables()))
    # The mixup table is only meaningful at a constant eta (a falling eta ends at the composite).
    if (
        trained.teacher is not None
        and ctx.config.student.mixup
        and not ctx.config.student.eta_decay_epochs
    ):
      jobs.append(
          (
              ctx.evaluator(
                  "student_mixed", *mixed_fns(ctx.teacher, ctx.student, ctx.config.student.eta)
              ),
              (trained.teacher.variables(), trained.student.variables()),
          )
      )
  for evaluator, variables in jobs:
    for split in splits:
      metrics.update(evaluator.evaluate(variables, split, data[split]))
  if trained.student is not None:
    metrics.update(compression_figures(ctx))
  if "student_mixed/test/NDCG@10" in metrics:
    metrics["student_mixed/note"] = (
        "mixup table eta*teacher + (1-eta)*composite: NOT "
        "compressed, for comparison with the reference code"
    )
  return metrics


def compression_figures(ctx: Context) -> dict[str, float]:
  c, v, d = ctx.config, ctx.dataset.num_items, ctx.config.model.d
  if c.student.embedding != "codes":
    return {f"student/compression/{k}": x for k, x in tt_bytes(v, d, c.student.tt_rank).items()}
  stats = compression_stats(v, c.codes.num_codebooks, c.codes.codebook_size, d)
  return {f"student/compression/{k}": x for k, x in stats.items()}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains config.stages in `workdir` and returns the final metrics (also logged)."""
  ctx = make_context(config, workdir)
  logging.info(
      "dataset %s: %s",
      ctx.dataset.name,
      ", ".join(
          f"{k} {v:,.4g}"
          if isinstance(v, float)
          else f"{k} {v:,}"
          if isinstance(v, int)
          else f"{k} {v}"
          for k, v in ctx.dataset.statistics().items()
      ),
  )
  metrics = report(ctx, train(ctx))
  ctx.writer.write("final", 0, metrics)
  return metrics
