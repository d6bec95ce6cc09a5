"""Helpers shared by test files (imported as `helpers`: pytest puts tests/ on sys.path)."""

import importlib.util
import os
import pathlib
import subprocess
import sys

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
    reason=f"needs MovieLens-100k: set ${ML100K_ENV} to a copy of RecBole's ml-100k.inter",
)


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


def run_limited(
    code: str, memory_mib: int = 1024, timeout: float = 300, args: tuple = ()
) -> subprocess.CompletedProcess:
  """Runs `code` in a fresh Python whose address space is capped at `memory_mib` (RLIMIT_AS),
  so an input that makes a reader allocate without bound fails there with MemoryError
  instead of taking the machine down. This checkout's ccrec is imported."""
  prelude = (
      "import resource\n"
      f"resource.setrlimit(resource.RLIMIT_AS, ({memory_mib << 20}, {memory_mib << 20}))\n"
  )
  env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
  return subprocess.run(
      [sys.executable, "-c", prelude + code, *map(str, args)],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
  )
