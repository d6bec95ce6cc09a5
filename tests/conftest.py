"""Shared test setup: small sizes, fast CPU, ml-100k from ../shared when present."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

SHARED_ML100K = os.path.join(ROOT, "..", "shared", "data", "ml-100k", "ml-100k.inter")
if os.path.exists(SHARED_ML100K):
  os.environ.setdefault("CCREC_ML100K_INTER", os.path.abspath(SHARED_ML100K))

# One persistent XLA compilation cache for the whole test run (and the notebook
# and multi-process subprocesses, which inherit the environment): many tests
# compile the same tiny-config steps; entries are keyed by program and devices.
import tempfile  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"ccrec-tests-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long runs (tests/test_fuzz.py), selected with -m slow")
