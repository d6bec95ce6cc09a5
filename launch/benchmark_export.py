r"""Exported model files: LiteRT (XNNPACK and builtin), ONNX Runtime and the numpy runtime
side by side, for the student (M=4 and M=3, K=256; int8), the teacher and TT.

  python launch/benchmark_export.py --output=docs/bench_export.md --json=docs/bench_export.json
  python launch/benchmark_export.py --catalogs=1682 --d=64 --repeats=5 --output=/tmp/b.md

Needs `pip install -e '.[export]'`. Writes a markdown table (command, machine,
versions, per-file times, sizes, peak memory, the targets) and the raw
results as JSON. See ccrec/benchmarks/files.py. Every runtime runs with
one thread; the V = 1,000,000 teacher needs several GB of memory and minutes to
convert.
"""

import json
import sys

from absl import app, flags, logging

from ccrec.benchmarks import files as file_benchmark
from ccrec.benchmarks import ondevice as numpy_benchmark

_CATALOGS = flags.DEFINE_string(
    "catalogs",
    "all",
    "'all', or a comma list of presets " "(ml-100k=1682, tmall=40000, 1m=1000000) and item counts",
)
_D = flags.DEFINE_integer("d", 256, "embedding size")
_CODEBOOKS = flags.DEFINE_list("codebooks", ["4x256", "3x256"], "MxK of each student")
_TT_RANK = flags.DEFINE_integer("tt_rank", 8, "TT rank of the baseline")
_MAX_LEN = flags.DEFINE_integer("max_len", 50, "session length (every timed session is full)")
_BLOCKS = flags.DEFINE_integer("num_blocks", 2, "transformer blocks")
_BATCH = flags.DEFINE_integer("batch", 100, "sessions per batched call")
_REPEATS = flags.DEFINE_integer("repeats", 30, "timed calls, one session")
_BATCH_REPEATS = flags.DEFINE_integer("batch_repeats", 5, "timed calls, batch")
_KEEP = flags.DEFINE_string("keep", None, "keep the exported files in this directory")
_OUTPUT = flags.DEFINE_string("output", None, "markdown file to write (default: print only)")
_JSON = flags.DEFINE_string("json", None, "also write the raw results as JSON here")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  codebooks = tuple(tuple(int(x) for x in mk.lower().split("x")) for mk in _CODEBOOKS.value)
  cases = [
      file_benchmark.Case(v, _D.value, codebooks, _TT_RANK.value, _MAX_LEN.value, _BLOCKS.value)
      for v in numpy_benchmark.parse_catalogs(_CATALOGS.value)
  ]
  result = file_benchmark.run(
      cases,
      batch=_BATCH.value,
      repeats=_REPEATS.value,
      batch_repeats=_BATCH_REPEATS.value,
      directory=_KEEP.value,
      log=logging.info,
  )
  text = file_benchmark.markdown(result, command="python " + " ".join(sys.argv))
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=1)
  print(text)


if __name__ == "__main__":
  app.run(main)
