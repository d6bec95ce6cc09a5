"""What a training run shows on its console (stderr): quiet libraries, progress, tables.

- `configure(verbose_libs)`: third-party INFO records (orbax's checkpoint
  bookkeeping, jax's backend probing) are dropped from the absl handler unless
  `verbose_libs`; ccrec's own INFO lines and everyone's warnings pass.
- `Progress`: one updating line (carriage return) on a terminal; elsewhere a
  plain line at every `every_percent` boundary, but only for loops that run long
  enough to need one (`min_interval_s` since the last line).
- `epoch_line`, `results_table`, `duration`: the text of the per-epoch line and
  of the final table.

The metrics themselves go to WORKDIR/metrics.jsonl (`ccrec.train.writer`); the
console shows a summary of them.
"""

from __future__ import annotations

import logging as std_logging
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from absl import logging

_CCREC_DIR = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_LOGGERS = ("jax", "orbax")  # python-logging loggers set to WARNING besides the filter
_active: Progress | None = None  # the progress line now drawn on a terminal, if any


def _main_dir() -> str:
  main = getattr(sys.modules.get("__main__"), "__file__", None)
  return os.path.dirname(os.path.abspath(main)) if main else ""


class _LibraryFilter(std_logging.Filter):
  """Passes warnings and errors, and INFO records logged from ccrec or the launch script."""

  def __init__(self, verbose_libs: bool):
    super().__init__()
    self.verbose_libs = verbose_libs
    self.ours = tuple(d + os.sep for d in (_CCREC_DIR, _main_dir()) if d)

  def filter(self, record: std_logging.LogRecord) -> bool:
    keep = (
        self.verbose_libs
        or record.levelno >= std_logging.WARNING
        or os.path.abspath(record.pathname).startswith(self.ours)
    )
    if keep and _active is not None:
      _active.clear()  # the record starts on a fresh line; the next update redraws
    return keep


def configure(verbose_libs: bool = False) -> None:
  """Installs the console policy on the absl handler (idempotent; call after flag parsing)."""
  handler = logging.get_absl_handler()
  for f in [f for f in handler.filters if isinstance(f, _LibraryFilter)]:
    handler.removeFilter(f)
  handler.addFilter(_LibraryFilter(verbose_libs))
  for name in _LIBRARY_LOGGERS:
    std_logging.getLogger(name).setLevel(
        std_logging.NOTSET if verbose_libs else std_logging.WARNING
    )


def duration(seconds: float) -> str:
  """'h:mm:ss' (or 'm:ss' under an hour); '?' for an unknown value."""
  if seconds is None or not math.isfinite(seconds):
    return "?"
  s = int(round(max(seconds, 0.0)))
  h, rest = divmod(s, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
  """A progress indicator for a loop of `total` units (None: unknown).

  On a terminal (`stream.isatty()`) one line redrawn in place at most every
  `redraw_s`, cleared by `close` (and before any log record, see `configure`).
  Otherwise a plain log line when the loop crosses a multiple of `every_percent`
  and at least `min_interval_s` have passed since it started or last printed
  (with no total: every `min_interval_s`), so short loops print nothing.
  """

  def __init__(
      self,
      label: str,
      total: int | None,
      *,
      every_percent: int = 10,
      min_interval_s: float = 30.0,
      redraw_s: float = 0.25,
      stream: TextIO | None = None,
      tty: bool | None = None,
  ):
    self.label = label
    self.total = total if total and total > 0 else None
    self.every_percent = every_percent
    self.min_interval_s = min_interval_s
    self.redraw_s = redraw_s
    self.stream = stream if stream is not None else sys.stderr
    self.tty = getattr(self.stream, "isatty", lambda: False)() if tty is None else tty
    self.start = self._last_line = time.monotonic()
    self._last_draw = -math.inf
    self._last_bucket = 0
    self._drawn = False

  def text(self, done: int, note: str = "") -> str:
    elapsed = time.monotonic() - self.start
    if self.total:
      pct = 100.0 * done / self.total
      left = elapsed / done * (self.total - done) if done else math.nan
      body = f"{done}/{self.total} ({pct:.0f}%), {duration(elapsed)} elapsed, {duration(left)} left"
    else:
      body = f"{done}, {duration(elapsed)} elapsed"
    return f"{self.label} {body}{'  ' + note if note else ''}"

  def update(self, done: int, note: str = "") -> None:
    global _active
    now = time.monotonic()
    if self.tty:
      if now - self._last_draw >= self.redraw_s:
        self.stream.write("\r" + self.text(done, note) + "\033[K")
        self.stream.flush()
        self._last_draw, self._drawn, _active = now, True, self
      return
    if self.total:
      bucket = int(100 * done / self.total) // self.every_percent
      crossed = bucket > self._last_bucket
      self._last_bucket = max(bucket, self._last_bucket)
    else:
      crossed = True
    if crossed and now - self._last_line >= self.min_interval_s and done < (self.total or math.inf):
      self._last_line = now
      logging.info("%s", self.text(done, note))

  def clear(self) -> None:
    global _active
    if self._drawn:
      self.stream.write("\r\033[K")
      self.stream.flush()
      self._drawn = False
      self._last_draw = -math.inf
    if _active is self:
      _active = None

  def close(self) -> None:
    self.clear()

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _number(v: Any) -> str:
  return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def train_loss(means: Mapping[str, float]) -> tuple[str, float] | None:
  """The headline training loss of a step's metric means: 'total' if the step reports one
  (distillation), else its first cross-entropy term (e.g. 'teacher/ce')."""
  if "total" in means:
    return "total", means["total"]
  for key in sorted(means):
    if key.endswith("/ce"):
      return key, means[key]
  return None


def epoch_line(
    stage: str,
    epoch: int,
    epochs: int,
    *,
    loss: tuple[str, float] | None,
    select: str | None,
    value: float | None,
    best: float,
    best_epoch: int,
    examples_per_s: float | None,
    elapsed_s: float,
    left_patience_s: float | None,
    left_budget_s: float,
) -> str:
  """One line per finished epoch: loss, validation metric, best so far, speed, time.

  `epoch` counts from 1. The time left is given as two bounds: the stage ends after
  `left_patience_s` if validation does not improve again (early stopping), and at
  most after `left_budget_s` (the remaining epoch budget).
  """
  parts = [f"[{stage}] epoch {epoch}/{epochs}"]
  if loss is not None:
    parts.append(f"train {loss[0]} {_number(loss[1])}")
  if select is not None and value is not None:
    metric = select.rsplit("/", 1)[-1]
    parts.append(f"valid {metric} {value:.4f} (best {best:.4f} at epoch {best_epoch + 1})")
  if examples_per_s:
    parts.append(f"{examples_per_s:,.0f} ex/s")
  parts.append(f"elapsed {duration(elapsed_s)}")
  if left_patience_s is None:
    parts.append(f"left <= {duration(left_budget_s)} (epoch budget)")
  else:
    parts.append(
        f"left {duration(left_patience_s)} (patience) to {duration(left_budget_s)} "
        "(epoch budget)"
    )
  return ", ".join(parts[:1]) + ": " + ", ".join(parts[1:])


def results_table(
    metrics: Mapping[str, Any], splits=("valid", "test"), names=("HR@10", "NDCG@10", "MRR@10")
) -> str:
  """Models x (split, metric) as aligned text, from `{model}/{split}/{metric}` keys."""
  models = []
  for key in metrics:
    parts = key.split("/")
    if len(parts) == 3 and parts[1] in splits and parts[2] in names and parts[0] not in models:
      models.append(parts[0])
  if not models:
    return ""
  columns = [(s, n) for s in splits for n in names]
  width = max(len(m) for m in models)
  head = " " * width + "  " + "  ".join(f"{s + ' ' + n:>13}" for s, n in columns)
  rows = [head]
  for model in models:
    cells = []
    for split, name in columns:
      v = metrics.get(f"{model}/{split}/{name}")
      cells.append(f"{v:>13.4f}" if isinstance(v, (int, float)) else f"{'-':>13}")
    rows.append(f"{model:<{width}}  " + "  ".join(cells))
  return "\n".join(rows)
