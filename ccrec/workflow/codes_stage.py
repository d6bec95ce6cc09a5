"""Stage 'codes' of the pipeline: learn, refine and save the codes; report what they keep.

`learn_codes(directory, table, item_counts, config, ...)` runs the Gumbel-softmax code
learner on the teacher's item table (`code_learning`), then the exact least-squares steps
(`code_refinement`), and writes DIRECTORY/{codes.npz, report.json}; on a rerun `read_codes`
reads them back, checked against the config. `teacher_through_codes` scores the teacher
through the codes' table: how much of its accuracy the codes alone keep, before any
student training.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from ccrec import atomic, console
from ccrec.checkpoint import CheckpointError
from ccrec.train import code_learning, code_refinement
from ccrec.train.writer import MetricWriter

CODES_FILE = "codes.npz"
REPORT_FILE = "report.json"

# table [V+1, d] -> the teacher's validation metrics with its item table replaced by it.
EvaluateFn = Callable[[np.ndarray], dict[str, float]]


def read_codes(
    directory: str, num_items: int, m: int, k: int, d: int
) -> dict[str, np.ndarray] | None:
  """The saved codes of `directory`, checked against the config; None if the stage has not
  run. Damage is a CheckpointError."""
  path = os.path.join(directory, CODES_FILE)
  if not os.path.exists(path):
    return None
  fix = f"delete {directory} to learn the codes again"
  try:
    with np.load(path, allow_pickle=False) as f:
      codes, codebooks = f["codes"], f["codebooks"]
  except Exception as e:  # zipfile/zlib/numpy raise many types for damaged files
    raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e}); {fix}") from e
  if (
      codes.shape != (num_items + 1, m)
      or codes.dtype.kind not in "iu"
      or codebooks.shape != (m, k, d)
      or codebooks.dtype.kind != "f"
  ):
    raise CheckpointError(
        f"{path} holds codes {codes.dtype} {list(codes.shape)} and codebooks {codebooks.dtype} "
        f"{list(codebooks.shape)}; this config needs [{num_items + 1}, {m}] integer codes below "
        f"K={k} and [{m}, {k}, {d}] float codebooks; {fix}"
    )
  if codes.size and (codes.min() < 0 or codes.max() >= k):
    raise CheckpointError(
        f"{path}: codes outside [0, {k}) (min {codes.min()}, max " f"{codes.max()}); {fix}"
    )
  return {"codes": codes, "codebooks": codebooks}


def learn_codes(
    directory: str,
    table: np.ndarray,
    item_counts: np.ndarray,
    config: ml_collections.ConfigDict,
    *,
    seed: int,
    evaluate: EvaluateFn,
    writer: MetricWriter,
) -> dict[str, np.ndarray]:
  """Stage 'codes': learned codes for the teacher's item table, saved in `directory`.

  Gumbel-softmax learning, then (config) the least-squares refit, the alternating
  refinement and de-duplication, every step weighting the items by their training
  frequency ** weight_power; the report adds the teacher scored through the codes' table.

  Args:
    directory: the stage's directory; process 0 writes codes.npz and report.json there.
    table: float [V+1, d], the teacher's item table (every process holds all of it, so
      every process learns the same codes).
    item_counts: int [V+1] training frequencies.
    config: the codes section of the experiment config (config.codes).
    seed: seed of the code learner.
    evaluate: `EvaluateFn`, reported as teacher_through_codes/valid/*.
    writer: logs the report's numbers as stage 'codes'.

  Returns:
    {"codes": [V+1, M] integer codes, "codebooks": float [M, K, d]}.
  """
  c, num_items = config, table.shape[0] - 1
  full_codes = c.codebook_size**c.num_codebooks
  if full_codes < num_items:
    logging.warning(
        "codes: K^M = %d^%d = %d full codes for %d items: at least %d items must share a code "
        "and tie in every ranking of the compressed student (raise codes.num_codebooks or "
        "codes.codebook_size unless this is the point)",
        c.codebook_size,
        c.num_codebooks,
        full_codes,
        num_items,
        num_items - full_codes,
    )
  weights = code_refinement.popularity_weights(item_counts, c.weight_power)
  started = time.perf_counter()
  # max_steps is an upper bound: early stopping usually ends learning sooner.
  with console.Progress("[codes] Gumbel-softmax step", c.max_steps) as bar:
    result = code_learning.learn_codes(
        table,
        **code_learning.learner_options(c),
        seed=seed,
        item_weights=weights,
        on_check=lambda step, loss: bar.update(step, f"mse {loss:.4g}, may stop early"),
    )
  codes, codebooks = result.codes, result.codebooks
  report = {k: v for k, v in result.report.items() if np.ndim(v) == 0}
  usage = np.asarray(result.report["usage"])
  if c.refit:
    codebooks, report["refit_mse"] = code_refinement.refit_codebooks(
        table, codes, c.codebook_size, item_weights=weights
    )
  if c.refine_iterations > 0:
    codes, codebooks, history = code_refinement.refine_codes(
        table, codes, c.codebook_size, iterations=c.refine_iterations, item_weights=weights
    )
    refined = code_learning.code_report(codes, c.codebook_size)
    usage = np.asarray(refined["usage"])
    report.update({f"refined_{k}": v for k, v in refined.items() if np.ndim(v) == 0})
    report["refined_mse"] = history[-1] if history else report.get("refit_mse")
  if c.unique:
    # Items sharing a full code are indistinguishable to the compressed student.
    codes, report["final_unresolved"] = code_refinement.deduplicate_codes(
        table, codes, codebooks, weights
    )
    codebooks, report["final_mse"] = code_refinement.refit_codebooks(
        table, codes, c.codebook_size, item_weights=weights
    )
    final = code_learning.code_report(codes, c.codebook_size)
    usage = np.asarray(final["usage"])
    report.update({f"final_{k}": v for k, v in final.items() if np.ndim(v) == 0})
  if weights is not None:  # the *_mse above are popularity-weighted; the plain mean beside them
    report["unweighted_mse"] = code_refinement.weighted_mse(table, codes, codebooks)
  report["weight_power"] = float(c.weight_power)
  report.update(teacher_through_codes(evaluate, codes, codebooks))
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    with atomic.writing(os.path.join(directory, CODES_FILE), "wb") as f:
      np.savez(f, codes=codes, codebooks=codebooks, usage=usage)
    atomic.write_json(os.path.join(directory, REPORT_FILE), report, sort_keys=False)
  writer.log(
      "codes",
      int(report["steps"]),
      {f"codes/{k}": float(v) for k, v in report.items() if isinstance(v, (int, float))},
  )
  final = "final_" if c.unique else "refined_" if c.refine_iterations > 0 else ""
  mse = report.get("final_mse", report.get("refined_mse", report.get("refit_mse", report["mse"])))
  logging.info(
      "[codes] %d steps, reconstruction mse %.4g (Gumbel codes %.4g), %d of %d items "
      "share a full code, teacher through the codes: valid %s %.4f, %s",
      report["steps"],
      mse,
      report["mse"],
      report[f"{final}collisions"],
      num_items,
      "NDCG@10",
      report.get("teacher_through_codes/valid/NDCG@10", math.nan),
      console.duration(time.perf_counter() - started),
  )
  return {"codes": codes, "codebooks": codebooks}


def teacher_through_codes(
    evaluate: EvaluateFn, codes: np.ndarray, codebooks: np.ndarray
) -> dict[str, float]:
  """The teacher's validation metrics with its item table replaced by the codes' table.

  How much of the teacher's accuracy the codes alone keep, before any student
  training: one validation pass, so code settings can be compared in seconds
  (keys `teacher_through_codes/valid/NDCG@10`, ..._hot, ..._cold).
  """
  metrics = evaluate(code_refinement.reconstruct(codes, codebooks))
  return {f"teacher_through_codes/{k.split('/', 1)[1]}": v for k, v in metrics.items()}
