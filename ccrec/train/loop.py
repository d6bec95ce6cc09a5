"""The epoch loop shared by every training stage.

Per epoch: run the jitted step over the epoch's batches (their order a pure
function of (seed, epoch)), log periodically, evaluate on validation, keep the
best checkpoint, save the latest, stop early after `patience` epochs without
improvement. A rerun resumes from the last completed epoch and, with the same
seed, ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import time
from typing import Any, Callable, Iterable, Mapping

import jax
from absl import logging

from ccrec.checkpoint import Checkpointer
from ccrec.train.writer import MetricWriter

StepFn = Callable[[Any, dict, jax.Array], tuple[Any, dict]]


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN or Inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class FitResult:
  state: Any  # the best state on validation (the last one if there is no validation)
  meta: dict  # epoch, best value, validation metrics of the best epoch


def check_finite(stage: str, step_range: str, sums: Mapping[str, float]) -> None:
  for name, value in sums.items():
    if not math.isfinite(value):
      raise NonFiniteLossError(
          f"[{stage}] loss term {name!r} is {value} at step {step_range}; training stopped, "
          "the last good checkpoint is kept. Lower the learning rate or enable train.clip_norm.")


def fit(*, stage: str, state: Any, train_step: StepFn,
        batches: Callable[[int], Iterable[dict]], evaluate: Callable[[Any], dict] | None,
        select: str, checkpointer: Checkpointer, writer: MetricWriter, key: jax.Array,
        epochs: int, patience: int, log_every: int,
        to_device: Callable[[dict], Any] = lambda b: b) -> FitResult:
  """Trains `state` with `train_step(state, batch, key) -> (state, metric sums)`.

  `batches(epoch)` yields the epoch's batches; `evaluate(state)` returns
  validation metrics containing `select` (higher is better). Metrics returned by
  the step are sums with a 'count' entry; they are averaged on the host.
  """
  meta = {"epoch": 0, "best": -math.inf, "best_epoch": -1, "bad_epochs": 0, "done": False,
          "best_metrics": {}}
  restored = checkpointer.restore(state, meta_keys=meta)
  if restored is not None:
    state, meta = restored
    logging.info("[%s] resumed from step %d (epoch %d)", stage, int(state.step), meta["epoch"])
  while not meta["done"] and meta["epoch"] < epochs:
    epoch = meta["epoch"]
    sums, window_start, t0 = None, int(state.step), time.perf_counter()
    for batch in batches(epoch):
      step = int(state.step)
      state, metrics = train_step(state, to_device(batch), jax.random.fold_in(key, step))
      sums = metrics if sums is None else jax.tree.map(operator.add, sums, metrics)
      if (step + 1) % log_every == 0:
        sums = _log_window(stage, writer, sums, f"{window_start}..{step}", t0, epoch)
        window_start, t0 = step + 1, time.perf_counter()
    if sums is not None:
      _log_window(stage, writer, sums, f"{window_start}..{int(state.step) - 1}", t0, epoch)
    meta["epoch"] = epoch + 1
    improved = True
    if evaluate is not None:
      valid = evaluate(state)
      value = float(valid[select])
      improved = value > meta["best"]
      if improved:
        meta.update(best=value, best_epoch=epoch, bad_epochs=0, best_metrics=valid)
      else:
        meta["bad_epochs"] += 1
      writer.log(stage, int(state.step), valid, epoch=epoch, best=meta["best"])
      meta["done"] = meta["bad_epochs"] >= patience
    meta["done"] = meta["done"] or meta["epoch"] >= epochs
    checkpointer.save(int(state.step), state, meta, best=improved)
  best = checkpointer.restore(state, "best")
  if best is not None:
    state = best[0]
  logging.info("[%s] finished: best %s=%.4f at epoch %d", stage, select, meta["best"],
               meta["best_epoch"])
  return FitResult(state=state, meta=meta)


def _log_window(stage, writer, sums, step_range, t0, epoch):
  host = {k: float(v) for k, v in jax.device_get(sums).items()}
  count = max(host.pop("count", 0.0), 1.0)
  check_finite(stage, step_range, host)
  elapsed = max(time.perf_counter() - t0, 1e-9)
  means = {k: v / count for k, v in host.items()}
  writer.log(stage, int(step_range.split("..")[-1]), means, epoch=epoch,
             examples_per_s=count / elapsed)
  return None
