"""Export a trained workdir's student (or teacher) as an on-device bundle (launch/export.py).

  python launch/export.py --workdir=runs/eodrec --output=bundles/eodrec
  python launch/export.py --workdir=runs/eodrec --output=bundles/eodrec_int8 --codebooks=int8
  python launch/export.py --workdir=runs/eodrec --output=bundles/teacher --model=teacher
  python launch/export.py --workdir=runs/eodrec --format=litert --output=out/student.tflite

The model is restored at its best checkpoint (`from_checkpoint.restore`); the bundle
itself is written by `ccrec.serving.export`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from absl import logging

from ccrec.data import popularity_ranking
from ccrec.serving import export as export_lib
from ccrec.workflow import workdir as workdir_lib
from ccrec.workflow.from_checkpoint import MODELS, restore
from ccrec.workflow.workdir import WorkdirError


def workdir_metrics(workdir: str, model: str) -> dict[str, Any]:
  """The model's valid/test metrics from WORKDIR/eval.json, else the last 'final' log line.

  A line of metrics.jsonl that does not parse is skipped with a warning (a killed run
  leaves half a line; the run that resumed appended after it); a garbage eval.json is a
  WorkdirError.
  """
  found: dict[str, Any] = {}
  path = os.path.join(workdir, workdir_lib.EVAL_FILE)
  if os.path.exists(path):
    try:
      with open(path) as f:
        found = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise WorkdirError(
          f"{path} is not valid JSON ({e}): rerun launch/evaluate.py "
          f"--workdir={workdir} to rewrite it"
      ) from e
    if not isinstance(found, dict):
      raise WorkdirError(
          f"{path} is not a JSON object: rerun launch/evaluate.py "
          f"--workdir={workdir} to rewrite it"
      )
  else:
    log = os.path.join(workdir, workdir_lib.METRICS_FILE)
    if os.path.exists(log):
      with open(log, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
      for number, line in enumerate(lines, 1):
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          logging.warning(
              "%s line %d is not valid JSON (an interrupted write?), skipped: %s", log, number, e
          )
          continue
        if not isinstance(record, dict):
          raise WorkdirError(f"{log} line {number} is not a JSON object: {line.strip()[:80]}")
        if record.get("stage") == "final":
          found = record
  return {
      k: v for k, v in found.items() if k.startswith(f"{model}/") and isinstance(v, (int, float))
  }


def _restore_model(workdir: str, model: str):
  """(the restored workdir, spec, variables of `model`) at its best checkpoint."""
  if model not in MODELS:
    raise ValueError(f"model must be 'student' or 'teacher', got {model!r}")
  restored = restore(workdir)
  if model not in restored.models:
    raise FileNotFoundError(f"{workdir} has no trained {model} checkpoint")
  spec, variables = restored.models[model]
  return restored, spec, variables


def export_workdir(
    workdir: str,
    output: str,
    *,
    model: str = "student",
    codebook_dtype: str = "float32",
    evaluate: bool = True,
    verify: bool = True,
    overwrite: bool = False,
) -> dict:
  """Exports the best checkpoint of `model` ('student' or 'teacher') of a trained workdir.

  evaluate: record the runtime's test metrics (metrics['runtime/test/...']).
  verify: compare the written bundle's top-20 lists with the JAX model's on the
    test prefixes and record the counts as manifest['verification'] (with
    int8 codebooks the reference is the JAX model on the dequantised codebooks).
  """
  restored, spec, variables = _restore_model(workdir, model)
  data = restored.dataset
  prefixes = [np.asarray(p) for p in data.test.prefixes]
  test = (prefixes, np.asarray(data.test.targets)) if evaluate else None
  extra = {
      "source": {
          "workdir": os.path.abspath(workdir),
          "model": model,
          "dataset": data.name,
          "num_items": int(data.num_items),
      }
  }
  manifest = export_lib.export_model(
      output,
      spec,
      variables,
      codebook_dtype=codebook_dtype,
      item_counts=data.item_counts,
      id_map=data.manifest.get("id_map") or {},
      metrics=workdir_metrics(workdir, model),
      test=test,
      extra=extra,
      overwrite=overwrite,
  )
  if verify:
    manifest["verification"] = export_lib.verify_bundle(
        output, spec, prefixes, batch_size=restored.config.eval.batch_size
    )
  return manifest


def export_workdir_file(
    workdir: str,
    output: str,
    *,
    fmt: str,
    model: str = "student",
    k: int = 20,
    batch: int | None = None,
    quantize: str | None = None,
    pair_codes: bool = True,
    verify: bool = True,
    overwrite: bool = False,
) -> dict:
  """Exports the best checkpoint of `model` of a trained workdir as one LiteRT (`fmt`
  'litert') or ONNX ('onnx') model file, verified on the test sessions
  (`ccrec.serving.convert.export_file`), with the raw-id map beside it."""
  from ccrec.serving import convert  # the converters are the optional 'export' extra

  restored, spec, variables = _restore_model(workdir, model)
  data = restored.dataset
  sessions = [np.asarray(p) for p in data.test.prefixes] if verify else None
  raw_ids = export_lib.raw_id_array(data.manifest.get("id_map") or {}, data.num_items)
  source = {"workdir": os.path.abspath(workdir), "model": model, "dataset": data.name}
  return convert.export_file(
      output,
      spec,
      variables,
      fmt=fmt,
      k=k,
      batch=batch,
      quantize=quantize,
      pair_codes=pair_codes,
      sessions=sessions,
      raw_ids=raw_ids,
      overwrite=overwrite,
      extra={"source": source},
      popular=popularity_ranking(data.item_counts)[: export_lib.POPULAR_SIZE],
  )
