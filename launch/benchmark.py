r"""On-device speed/size benchmark: teacher table, student (materialised, code tables in
numpy and JAX), tensor-train (rebuilding rows, cached), one session and a batch.

  python launch/benchmark.py --output=docs/bench_ondevice.md
  python launch/benchmark.py --catalogs=1m --d=256 --repeats=5 --output=/tmp/b.md

Writes a markdown table (command, machine, date, per-method times, sizes,
targets) to --output and prints it. See ccrec/benchmarks/ondevice.py.
"""

import json
import os
import sys

# Thread counts must be fixed before numpy / jax load their BLAS and thread pools.
_THREADS_ARG = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--threads=")), "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ[_var] = _THREADS_ARG
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen="
    + ("false" if _THREADS_ARG == "1" else "true")
    + f" intra_op_parallelism_threads={_THREADS_ARG}"
).strip()

import _errors  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from ccrec.benchmarks import ondevice as benchmark  # noqa: E402

_CATALOGS = flags.DEFINE_string(
    "catalogs",
    "all",
    "'all', or a comma list of presets (ml-100k=1682, tmall=40000, " "1m=1000000) and item counts",
)
_NUM_ITEMS = flags.DEFINE_list("num_items", None, "item counts; overrides --catalogs")
_D = flags.DEFINE_list("d", ["128", "256"], "embedding sizes")
_M = flags.DEFINE_integer("M", 4, "codebooks")
_K = flags.DEFINE_integer("K", 256, "codewords per codebook")
_TT_RANK = flags.DEFINE_integer("tt_rank", 8, "TT rank of the baseline")
_BATCH = flags.DEFINE_integer("batch", 100, "sessions per batch (the batched rows)")
_REPEATS = flags.DEFINE_integer("repeats", 7, "timed calls per method, one session")
_BATCH_REPEATS = flags.DEFINE_integer("batch_repeats", 3, "timed calls per method, batch")
_JAX = flags.DEFINE_bool("jax", True, "also time the jitted JAX code-table path")
_BUNDLES = flags.DEFINE_bool("bundle_sizes", True, "write each bundle once to measure its size")
_THREADS = flags.DEFINE_integer(
    "threads",
    1,
    "BLAS / XLA threads (1: the on-device case, and " "stable timings on a shared machine)",
)
_OUTPUT = flags.DEFINE_string("output", None, "markdown file to write (default: print only)")
_JSON = flags.DEFINE_string("json", None, "also write the raw results as JSON here")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  catalogs = (
      [int(v) for v in _NUM_ITEMS.value]
      if _NUM_ITEMS.value
      else benchmark.parse_catalogs(_CATALOGS.value)
  )
  cases = benchmark.cases_from(
      catalogs, [int(d) for d in _D.value], _M.value, _K.value, _TT_RANK.value
  )
  result = benchmark.run(
      cases,
      batch=_BATCH.value,
      repeats=_REPEATS.value,
      batch_repeats=_BATCH_REPEATS.value,
      use_jax=_JAX.value,
      bundle_sizes=_BUNDLES.value,
      log=logging.info,
  )
  result["machine"]["threads"] = _THREADS.value
  text = benchmark.markdown(result, command="python " + " ".join(sys.argv))
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=1)
  print(text)


if __name__ == "__main__":
  _errors.run(main)
