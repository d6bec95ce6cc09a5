"""Helpers shared by test files (imported as `helpers`: pytest puts tests/ on sys.path)."""

import importlib.util
import os
import pathlib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tests find MovieLens-100k through this variable only (.ci/run sets it); unset, they skip.
ML100K_ENV = "CCREC_ML100K_INTER"


def ml100k_inter() -> pathlib.Path | None:
  """The ml-100k.inter file $CCREC_ML100K_INTER names, or None when it is unset."""
  value = os.environ.get(ML100K_ENV)
  return pathlib.Path(value).expanduser() if value else None


needs_ml100k = pytest.mark.skipif(
    ml100k_inter() is None,
    reason=f"needs MovieLens-100k: set ${ML100K_ENV} to a copy of RecBole's ml-100k.inter")


def tiny(**overrides):
  """configs/tiny.py with dotted-field overrides: tiny(**{"train.epochs": 1})."""
  spec = importlib.util.spec_from_file_location("tiny", os.path.join(ROOT, "configs", "tiny.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  with c.unlocked():
    for key, value in overrides.items():
      node = c
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return c
