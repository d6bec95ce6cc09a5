"""Workdir bookkeeping: the saved config, the dataset fingerprint, loading the data.

WORKDIR/config.json holds the resolved config of the experiment. Running a
different config in the same workdir is an error naming the differing fields
(nothing is overwritten). WORKDIR/dataset.json records the dataset's item
count and statistics; a dataset that disagrees with it is an error.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

from ccrec.data import SessionDataset, load_dataset, synthetic_dataset


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
  from ccrec import config as config_lib
  defaults = flatten(config_dict(config_lib.base_config()))
  return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k)
                and not (k not in saved and k in defaults and now.get(k) == defaults[k]))


def prepare(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates the workdir and saves the config, or checks it against the saved one."""
  path = os.path.join(workdir, "config.json")
  mine = config_dict(config)
  if os.path.exists(path):
    a, b = flatten(read_config_json(workdir)), flatten(mine)
    diff = config_differences(a, b)
    if diff:
      shown = ", ".join(f"{k}: saved {a.get(k)!r} vs now {b.get(k)!r}" for k in diff[:8])
      raise WorkdirError(
          f"workdir {workdir} holds another experiment's config ({path}); differing fields: "
          f"{shown}{' ...' if len(diff) > 8 else ''}. Use a new --workdir (nothing was changed).")
    return
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(mine, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_config_json(workdir: str) -> dict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{path} not found: {workdir} is not a ccrec workdir (train into it first)")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise WorkdirError(f"{path} is not valid JSON: {e}") from e


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The saved config of a workdir, as a locked ConfigDict."""
  from ccrec import config as config_lib
  base = config_lib.base_config()
  saved = read_config_json(workdir)
  try:
    base.update_from_flattened_dict({k: tuple(v) if isinstance(v, list) else v
                                     for k, v in flatten(saved).items()})
  except (KeyError, AttributeError, TypeError) as e:
    raise WorkdirError(f"{workdir}/config.json does not match the config schema: {e}") from e
  return config_lib.lock(base)


def load_data(config: ml_collections.ConfigDict) -> SessionDataset:
  d = config.data
  if d.dataset == "synthetic":
    return synthetic_dataset(d.synthetic_items, d.synthetic_sessions, seed=config.seed,
                             max_len=d.max_len)
  return load_dataset(d.dataset, protocol=d.protocol, max_len=d.max_len,
                      data_dir=d.data_dir or None)


def check_dataset(workdir: str, dataset: SessionDataset) -> None:
  """Records the dataset's fingerprint, or checks it against the recorded one."""
  path = os.path.join(workdir, "dataset.json")
  mine = {"name": dataset.name, "num_items": int(dataset.num_items),
          "train_sequences": int(len(dataset.train)), "valid": int(len(dataset.valid.targets)),
          "test": int(len(dataset.test.targets))}
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != mine:
      raise WorkdirError(f"the dataset loaded now ({mine}) differs from the one this workdir was "
                         f"trained on ({saved}, {path}); its checkpoints do not fit it")
    return
  if jax.process_index() == 0:
    with open(path, "w") as f:
      json.dump(mine, f, indent=1)
