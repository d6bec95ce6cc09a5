"""Metric writer: appends one JSON object per event to a JSON-lines file.

Only process 0 writes (multi-host runs log once). Values are converted to
plain Python floats on the host.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax
from absl import logging


def to_python(value: Any) -> Any:
  if hasattr(value, "item") and getattr(value, "size", 2) == 1:
    return value.item()
  if isinstance(value, Mapping):
    return {k: to_python(v) for k, v in value.items()}
  return value


class MetricWriter:
  """Appends to `path` (a workdir's metrics.jsonl)."""

  def __init__(self, path: str):
    self.path = path
    self.enabled = jax.process_index() == 0
    self._checked_end = False

  def write(self, stage: str, step: int, metrics: Mapping[str, Any], **extra: Any) -> None:
    if not self.enabled:
      return
    record = {"stage": stage, "step": int(step), "time": time.time(), **extra}
    record.update({k: to_python(v) for k, v in metrics.items()})
    line = json.dumps(record, allow_nan=True) + "\n"
    if not self._checked_end:  # a killed run may have left half a line: start a new one
      self._checked_end = True
      if os.path.exists(self.path) and os.path.getsize(self.path):
        with open(self.path, "rb") as f:
          f.seek(-1, os.SEEK_END)
          if f.read(1) != b"\n":
            line = "\n" + line
    with open(self.path, "a") as f:
      f.write(line)

  def log(self, stage: str, step: int, metrics: Mapping[str, Any], **extra: Any) -> None:
    """`write`, and the same record as a debug log line (absl `-v=1` shows it; the console
    summary is `ccrec.train.console`'s)."""
    self.write(stage, step, metrics, **extra)
    if logging.vlog_is_on(1):
      shown = " ".join(
          f"{k}={v:.4g}" if isinstance(v, float) and math.isfinite(v) else f"{k}={v}"
          for k, v in {**extra, **{k: to_python(v) for k, v in metrics.items()}}.items()
      )
      logging.debug("[%s] step %d %s", stage, step, shown)
