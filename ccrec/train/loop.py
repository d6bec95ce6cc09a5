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

from ccrec import console
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
          "the last good checkpoint is kept. Lower the learning rate or enable train.clip_norm."
      )


def fit(
    *,
    stage: str,
    state: Any,
    train_step: StepFn,
    batches: Callable[[int], Iterable[dict]],
    evaluate: Callable[[Any], dict] | None,
    select: str,
    checkpointer: Checkpointer,
    writer: MetricWriter,
    key: jax.Array,
    epochs: int,
    patience: int,
    log_every: int,
    to_device: Callable[[dict], Any] = lambda b: b,
) -> FitResult:
  """Trains `state` with `train_step(state, batch, key) -> (state, metric sums)`.

  `batches(epoch)` yields the epoch's batches; `evaluate(state)` returns
  validation metrics containing `select` (higher is better). Metrics returned by
  the step are sums with a 'count' entry; they are averaged on the host. Every
  `log_every` steps their means go to metrics.jsonl (and the debug log); the
  console gets one line per epoch (`console.epoch_line`) and a progress line.
  """
  meta = {
      "epoch": 0,
      "best": -math.inf,
      "best_epoch": -1,
      "bad_epochs": 0,
      "done": False,
      "best_metrics": {},
  }
  restored = checkpointer.restore(state, meta_keys=meta)
  if restored is not None:
    state, meta = restored
    logging.info("[%s] resumed from step %d (epoch %d)", stage, int(state.step), meta["epoch"])
  # Every epoch has the same number of steps: known from a finished epoch (or the checkpoint).
  steps_per_epoch = int(state.step) // meta["epoch"] if meta["epoch"] else None
  started, epoch_seconds = time.perf_counter(), []
  while not meta["done"] and meta["epoch"] < epochs:
    epoch = meta["epoch"]
    epoch_start = time.perf_counter()
    sums, window_start, t0 = None, int(state.step), epoch_start
    totals: dict[str, float] = {}
    first_step = int(state.step)
    with console.Progress(f"[{stage}] epoch {epoch + 1}/{epochs} step", steps_per_epoch) as bar:
      for batch in batches(epoch):
        step = int(state.step)
        state, metrics = train_step(state, to_device(batch), jax.random.fold_in(key, step))
        sums = metrics if sums is None else jax.tree.map(operator.add, sums, metrics)
        if (step + 1) % log_every == 0:
          _add(totals, _log_window(stage, writer, sums, f"{window_start}..{step}", t0, epoch))
          sums, window_start, t0 = None, step + 1, time.perf_counter()
        bar.update(step + 1 - first_step, _loss_note(totals))
      if sums is not None:
        _add(
            totals,
            _log_window(stage, writer, sums, f"{window_start}..{int(state.step) - 1}", t0, epoch),
        )
    steps_per_epoch = int(state.step) - first_step
    train_seconds = time.perf_counter() - epoch_start
    meta["epoch"] = epoch + 1
    improved = True
    value = None
    if evaluate is not None:
      valid = evaluate(state)
      value = float(valid[select])
      improved = value > meta["best"]
      if improved:
        meta.update(best=value, best_epoch=epoch, bad_epochs=0, best_metrics=valid)
      else:
        meta["bad_epochs"] += 1
      writer.write(stage, int(state.step), valid, epoch=epoch, best=meta["best"])
      meta["done"] = meta["bad_epochs"] >= patience
    meta["done"] = meta["done"] or meta["epoch"] >= epochs
    checkpointer.save(int(state.step), state, meta, best=improved)
    epoch_seconds.append(time.perf_counter() - epoch_start)
    # Seconds per epoch: the first epoch of a process also compiles, so it is left out later.
    per_epoch = (
        sum(epoch_seconds[1:]) / (len(epoch_seconds) - 1)
        if len(epoch_seconds) > 1
        else epoch_seconds[0]
    )
    count = totals.get("count", 0.0)
    means = {k: v / max(count, 1.0) for k, v in totals.items() if k != "count"}
    left_epochs = 0 if meta["done"] else epochs - meta["epoch"]
    logging.info(
        "%s",
        console.epoch_line(
            stage,
            meta["epoch"],
            epochs,
            loss=console.train_loss(means),
            select=select if evaluate is not None else None,
            value=value,
            best=meta["best"],
            best_epoch=meta["best_epoch"],
            examples_per_s=count / max(train_seconds, 1e-9),
            elapsed_s=time.perf_counter() - started,
            left_patience_s=(
                None
                if evaluate is None
                else 0.0
                if meta["done"]
                else min(patience - meta["bad_epochs"], left_epochs) * per_epoch
            ),
            left_budget_s=left_epochs * per_epoch,
        ),
    )
  best = checkpointer.restore(state, "best")
  if best is not None:
    state = best[0]
  logging.info(
      "[%s] finished: best %s=%.4f at epoch %d of %d",
      stage,
      select,
      meta["best"],
      meta["best_epoch"] + 1,
      meta["epoch"],
  )
  return FitResult(state=state, meta=meta)


def _add(totals: dict[str, float], sums: Mapping[str, float]) -> None:
  for k, v in sums.items():
    totals[k] = totals.get(k, 0.0) + v


def _loss_note(totals: Mapping[str, float]) -> str:
  """The progress line's running loss (from the windows logged so far this epoch)."""
  count = totals.get("count", 0.0)
  loss = (
      console.train_loss({k: v / count for k, v in totals.items() if k != "count"})
      if count
      else None
  )
  return f"{loss[0]} {loss[1]:.4g}" if loss else ""


def _log_window(stage, writer, sums, step_range, t0, epoch) -> dict[str, float]:
  """Writes the window's metric means to metrics.jsonl; returns its host sums (with count)."""
  host = {k: float(v) for k, v in jax.device_get(sums).items()}
  count = max(host.get("count", 0.0), 1.0)
  check_finite(stage, step_range, {k: v for k, v in host.items() if k != "count"})
  elapsed = max(time.perf_counter() - t0, 1e-9)
  means = {k: v / count for k, v in host.items() if k != "count"}
  writer.log(
      stage, int(step_range.split("..")[-1]), means, epoch=epoch, examples_per_s=count / elapsed
  )
  return host
