"""Shared test setup: this checkout's ccrec, a persistent compile cache, the `slow` marker.

Tests that need MovieLens-100k read it from $CCREC_ML100K_INTER only (`helpers.needs_ml100k`
skips them, naming the variable, when it is unset).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
# Subprocesses (launch scripts, notebooks, multi-process runs) import this checkout's ccrec
# too, not another installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT]
)

# One persistent XLA compilation cache for the whole test run (and the notebook
# and multi-process subprocesses, which inherit the environment): many tests
# compile the same tiny-config steps; entries are keyed by program and devices.
import tempfile  # noqa: E402

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"ccrec-tests-xla-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_configure(config):
  config.addinivalue_line(
      "markers",
      "slow: multi-stage pipeline runs, subprocesses, notebooks, large "
      'parametrizations; `pytest -m "not slow"` is the fast tier',
  )
