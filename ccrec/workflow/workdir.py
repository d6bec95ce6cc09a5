"""Workdir bookkeeping: its layout, the saved config, the dataset fingerprint, loading the data.

Layout (docs/DESIGN.md, "Workdir layout"): CONFIG_FILE, DATASET_FILE, METRICS_FILE,
EVAL_FILE at the top, and one directory per stage of `STAGES`.

WORKDIR/config.json holds the resolved config of the experiment. Running a different
config in the same workdir is an error naming the differing fields (nothing is
overwritten). WORKDIR/dataset.json records the dataset's item count, split sizes and a
sha256 of its contents; a dataset that disagrees with it is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from ccrec import atomic
from ccrec import config as config_lib
from ccrec.data import SessionDataset, load_dataset, synthetic_dataset

CONFIG_FILE = "config.json"  # the resolved config
DATASET_FILE = "dataset.json"  # the dataset's fingerprint
METRICS_FILE = "metrics.jsonl"  # one JSON object per log/eval event
EVAL_FILE = "eval.json"  # launch/evaluate.py's metrics
STAGES = config_lib.STAGES  # each stage's checkpoints (or codes) live in WORKDIR/<stage>/


def stage_dir(workdir: str, stage: str) -> str:
  if stage not in STAGES:
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
  return os.path.join(workdir, stage)


class WorkdirError(RuntimeError):
  """The workdir belongs to another experiment or its files are inconsistent."""


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  """A config dict (as in config.json) -> {dotted field: value}, tuples as lists."""
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: list(d) if isinstance(d, tuple) else d}


def config_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json())


def config_differences(saved: dict, now: dict) -> list[str]:
  """Dotted fields where two flattened configs differ, sorted.

  A field added to the schema after `saved` was written is no difference while
  `now` keeps its default (the old run behaved as that default); any other
  value of it is a difference.
  """
  defaults = flatten(config_dict(config_lib.base_config()))
  return sorted(
      k
      for k in set(saved) | set(now)
      if saved.get(k) != now.get(k)
      and not (k not in saved and k in defaults and now.get(k) == defaults[k])
  )


def check_config(workdir: str, config: ml_collections.ConfigDict) -> bool:
  """Raises WorkdirError if the workdir holds another config; True if it holds this one,
  False if it holds none yet. Writes nothing."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return False
  a, b = flatten(read_config_json(workdir)), flatten(config_dict(config))
  diff = config_differences(a, b)
  if diff:
    shown = ", ".join(f"{k}: saved {a.get(k)!r} vs now {b.get(k)!r}" for k in diff[:8])
    raise WorkdirError(
        f"workdir {workdir} holds another experiment's config ({path}); differing fields: "
        f"{shown}{' ...' if len(diff) > 8 else ''}. Use a new --workdir (nothing was changed)."
    )
  return True


def _write_json(path: str, obj: Any) -> None:
  """Process 0 writes `obj` to `path` through a temporary name (never half a file)."""
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic.write_json(path, obj)


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates the workdir and writes its config.json (after `check_config` found none)."""
  _write_json(os.path.join(workdir, CONFIG_FILE), config_dict(config))


def prepare(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates the workdir and saves the config, or checks it against the saved one."""
  if not check_config(workdir, config):
    save_config(workdir, config)


def read_config_json(workdir: str) -> dict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f"{path} not found: {workdir} is not a ccrec workdir (train into it first)")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise WorkdirError(f"{path} is not valid JSON: {e}") from e


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The saved config of a workdir, as a locked ConfigDict."""
  base = config_lib.base_config()
  saved = read_config_json(workdir)
  try:
    base.update_from_flattened_dict(
        {k: tuple(v) if isinstance(v, list) else v for k, v in flatten(saved).items()}
    )
  except (KeyError, AttributeError, TypeError) as e:
    raise WorkdirError(
        f"{os.path.join(workdir, CONFIG_FILE)} does not match the config " f"schema: {e}"
    ) from e
  return config_lib.lock(base)


def load_data(config: ml_collections.ConfigDict) -> SessionDataset:
  d = config.data
  if d.dataset == "synthetic":
    return synthetic_dataset(
        d.synthetic_items, d.synthetic_sessions, seed=config.seed, max_len=d.max_len
    )
  return load_dataset(
      d.dataset, protocol=d.protocol, max_len=d.max_len, data_dir=d.data_dir or None
  )


def fingerprint(dataset: SessionDataset) -> str:
  """sha256 of the dataset's contents: every training sequence, validation and test example."""
  h = hashlib.sha256()
  for seqs in (dataset.train, dataset.valid.prefixes, dataset.test.prefixes):
    h.update(np.ascontiguousarray(seqs.offsets, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(seqs.items, dtype="<i8").tobytes())
  for examples in (dataset.valid, dataset.test):
    h.update(np.ascontiguousarray(examples.targets, dtype="<i8").tobytes())
  return h.hexdigest()


def check_dataset(workdir: str, dataset: SessionDataset) -> None:
  """Records the dataset's fingerprint, or checks it against the recorded one.

  The record holds the item count, split sizes and a sha256 of the contents, so a dataset
  rebuilt from other data with the same sizes is refused too.
  """
  path = os.path.join(workdir, DATASET_FILE)
  mine = {
      "name": dataset.name,
      "num_items": int(dataset.num_items),
      "train_sequences": int(len(dataset.train)),
      "valid": int(len(dataset.valid.targets)),
      "test": int(len(dataset.test.targets)),
      "sha256": fingerprint(dataset),
  }
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise WorkdirError(
          f"{path} is not valid JSON ({e}): the workdir's dataset record is "
          "damaged; restore it or train into a new --workdir"
      ) from e
    if not isinstance(saved, dict):
      raise WorkdirError(
          f"{path} must hold a JSON object (the dataset record), got " f"{type(saved).__name__}"
      )
    if saved != mine:
      diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
      shown = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {mine.get(k)!r}" for k in diff)
      raise WorkdirError(
          f"the dataset loaded now differs from the one this workdir was trained on ({path}); "
          f"differing: {shown}. Its checkpoints do not fit it (nothing was changed)"
      )
    return
  _write_json(path, mine)
