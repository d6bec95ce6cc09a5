"""Helpers shared by test files (imported as `helpers`: pytest puts tests/ on sys.path)."""

import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def run_limited(code: str, memory_mib: int = 1024, timeout: float = 300,
                args: tuple = ()) -> subprocess.CompletedProcess:
  """Runs `code` in a fresh Python whose address space is capped at `memory_mib` (RLIMIT_AS),
  so an input that makes a reader allocate without bound fails there with MemoryError
  instead of taking the machine down. This checkout's ccrec is imported."""
  prelude = ("import resource\n"
             f"resource.setrlimit(resource.RLIMIT_AS, ({memory_mib << 20}, {memory_mib << 20}))\n")
  env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
  return subprocess.run([sys.executable, "-c", prelude + code, *map(str, args)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)
