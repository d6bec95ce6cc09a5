"""Stage 'codes' of the pipeline: learn, refine and save the codes; report what they keep.

`learn_codes(ctx, teacher_state)` runs the Gumbel-softmax code learner on the
teacher's item table (`code_learning`), then the exact least-squares steps
(`code_refinement`), writes WORKDIR/codes/{codes.npz, report.json}, and on a
rerun reads them back (`read_codes`, which checks them against the config).
`teacher_through_codes` scores the teacher through the codes' table: how much
of its accuracy the codes alone keep, before any student training.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import TYPE_CHECKING

import jax
import numpy as np
from absl import logging

from ccrec import console
from ccrec.train import code_learning, code_refinement
from ccrec.train.state import TrainState

if TYPE_CHECKING:
  from ccrec.train.pipeline import Context


def read_codes(path: str, num_items: int, m: int, k: int, d: int) -> dict[str, np.ndarray]:
  """The saved codes stage, checked against the config; damage is a CheckpointError."""
  from ccrec.checkpoint import CheckpointError
  fix = f"delete {os.path.dirname(path)} to learn the codes again"
  try:
    with np.load(path, allow_pickle=False) as f:
      codes, codebooks = f["codes"], f["codebooks"]
  except Exception as e:  # zipfile/zlib/numpy raise many types for damaged files
    raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e}); {fix}") from e
  if (codes.shape != (num_items + 1, m) or codes.dtype.kind not in "iu"
      or codebooks.shape != (m, k, d) or codebooks.dtype.kind != "f"):
    raise CheckpointError(
        f"{path} holds codes {codes.dtype} {list(codes.shape)} and codebooks {codebooks.dtype} "
        f"{list(codebooks.shape)}; this config needs [{num_items + 1}, {m}] integer codes below "
        f"K={k} and [{m}, {k}, {d}] float codebooks; {fix}")
  if codes.size and (codes.min() < 0 or codes.max() >= k):
    raise CheckpointError(f"{path}: codes outside [0, {k}) (min {codes.min()}, max "
                          f"{codes.max()}); {fix}")
  return {"codes": codes, "codebooks": codebooks}


def learn_codes(ctx: Context, teacher_state: TrainState) -> dict[str, np.ndarray]:
  """Stage 'codes': learned codes for the teacher's table (cached as codes.npz + report.json).

  Gumbel-softmax learning, then (config.codes) the least-squares refit, the
  alternating refinement and de-duplication, every step weighting the items by
  their training frequency ** codes.weight_power; the report adds the teacher
  scored through the codes' table.
  """
  path = os.path.join(ctx.stage_dir("codes"), "codes.npz")
  c = ctx.config.codes
  if os.path.exists(path):
    logging.info("[codes] read %s", path)
    return read_codes(path, ctx.dataset.num_items, c.num_codebooks, c.codebook_size,
                       ctx.config.model.d)
  if c.codebook_size ** c.num_codebooks < ctx.dataset.num_items:
    logging.warning(
        "codes: K^M = %d^%d = %d full codes for %d items: at least %d items must share a code "
        "and tie in every ranking of the compressed student (raise codes.num_codebooks or "
        "codes.codebook_size unless this is the point)", c.codebook_size, c.num_codebooks,
        c.codebook_size ** c.num_codebooks, ctx.dataset.num_items,
        ctx.dataset.num_items - c.codebook_size ** c.num_codebooks)
  from ccrec import parallel
  # Gathered from every process when the table is split across hosts; each
  # process then learns the same codes (same table, same seed), process 0 writes.
  table = parallel.to_host(ctx.teacher.apply(teacher_state.variables(), method="table"))
  weights = code_refinement.popularity_weights(ctx.dataset.item_counts, c.weight_power)
  started = time.perf_counter()
  # max_steps is an upper bound: early stopping usually ends learning sooner.
  with console.Progress("[codes] Gumbel-softmax step", c.max_steps) as bar:
    result = code_learning.learn_codes(
        table, num_codebooks=c.num_codebooks, codebook_size=c.codebook_size,
        temperature=c.temperature, learning_rate=c.learning_rate, batch_size=c.batch_size,
        max_steps=c.max_steps, eval_every=c.eval_every, patience=c.patience,
        tolerance=c.tolerance, seed=ctx.config.seed, item_weights=weights,
        on_check=lambda step, loss: bar.update(step, f"mse {loss:.4g}, may stop early"))
  codes, codebooks = result.codes, result.codebooks
  report = {k: v for k, v in result.report.items() if np.ndim(v) == 0}
  usage = np.asarray(result.report["usage"])
  if c.refit:
    codebooks, report["refit_mse"] = code_refinement.refit_codebooks(
        table, codes, c.codebook_size, item_weights=weights)
  if c.refine_iterations > 0:
    codes, codebooks, history = code_refinement.refine_codes(
        table, codes, c.codebook_size, iterations=c.refine_iterations, item_weights=weights)
    refined = code_learning.code_report(codes, c.codebook_size)
    usage = np.asarray(refined["usage"])
    report.update({f"refined_{k}": v for k, v in refined.items() if np.ndim(v) == 0})
    report["refined_mse"] = history[-1] if history else report.get("refit_mse")
  if c.unique:
    # Items sharing a full code are indistinguishable to the compressed student.
    codes, report["final_unresolved"] = code_refinement.deduplicate_codes(table, codes, codebooks,
                                                                       weights)
    codebooks, report["final_mse"] = code_refinement.refit_codebooks(
        table, codes, c.codebook_size, item_weights=weights)
    final = code_learning.code_report(codes, c.codebook_size)
    usage = np.asarray(final["usage"])
    report.update({f"final_{k}": v for k, v in final.items() if np.ndim(v) == 0})
  if weights is not None:  # the *_mse above are popularity-weighted; the plain mean beside them
    recon = code_refinement.reconstruct(codes, codebooks)[1:]
    report["unweighted_mse"] = float(np.mean(np.sum(np.square(recon - table[1:]), axis=1)))
  report["weight_power"] = float(c.weight_power)
  report.update(teacher_through_codes(ctx, teacher_state, codes, codebooks))
  if jax.process_index() == 0:
    os.makedirs(ctx.stage_dir("codes"), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, codes=codes, codebooks=codebooks, usage=usage)
    os.replace(tmp, path)
    with open(os.path.join(ctx.stage_dir("codes"), "report.json"), "w") as f:
      json.dump(report, f, indent=1)
  ctx.writer.log("codes", int(report["steps"]), {
      f"codes/{k}": float(v) for k, v in report.items() if isinstance(v, (int, float))})
  final = "final_" if c.unique else "refined_" if c.refine_iterations > 0 else ""
  mse = report.get("final_mse", report.get("refined_mse", report.get("refit_mse", report["mse"])))
  logging.info("[codes] %d steps, reconstruction mse %.4g (Gumbel codes %.4g), %d of %d items "
               "share a full code, teacher through the codes: valid %s %.4f, %s",
               report["steps"], mse, report["mse"], report[f"{final}collisions"],
               ctx.dataset.num_items, ctx.config.train.select_metric,
               report.get(f"teacher_through_codes/valid/{ctx.config.train.select_metric}",
                          math.nan),
               console.duration(time.perf_counter() - started))
  return {"codes": codes, "codebooks": codebooks}


def with_item_table(variables: dict, table: np.ndarray) -> dict:
  """The teacher's variables with its item table replaced by `table` [V+1, d], in the
  original table's layout (item-sharded or replicated, one process or several)."""
  original = variables["params"]["items"]["embedding"]
  table = np.asarray(table, original.dtype)
  if table.shape != original.shape:
    raise ValueError(f"item table of shape {list(table.shape)} for a teacher table of shape "
                     f"{list(original.shape)}")
  if isinstance(original, jax.Array):
    embedding = jax.make_array_from_callback(table.shape, original.sharding, lambda i: table[i])
  else:  # host arrays stay on the host
    embedding = table
  params = dict(variables["params"], items=dict(variables["params"]["items"], embedding=embedding))
  return dict(variables, params=params)


def teacher_through_codes(ctx: Context, teacher_state: TrainState, codes: np.ndarray,
                          codebooks: np.ndarray) -> dict[str, float]:
  """The teacher's validation metrics with its item table replaced by the codes' table.

  How much of the teacher's accuracy the codes alone keep, before any student
  training: one validation pass, so code settings can be compared in seconds
  (keys `teacher_through_codes/valid/NDCG@10`, ..._hot, ..._cold).
  """
  variables = with_item_table(teacher_state.variables(),
                              code_refinement.reconstruct(codes, codebooks))
  from ccrec.train.pipeline import model_fns  # pipeline imports this module
  evaluator = ctx.evaluator("teacher", *model_fns(ctx.teacher))
  metrics = evaluator.evaluate(variables, "valid", ctx.dataset.valid)
  return {f"teacher_through_codes/{k.split('/', 1)[1]}": v for k, v in metrics.items()}
