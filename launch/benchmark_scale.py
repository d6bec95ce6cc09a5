r"""The scaling table: every stage's time and memory against the catalog size V.

  nice -n 10 python launch/benchmark_scale.py --config=configs/synthetic_1m.py \
      --catalogs=1682,10000,40000,200000,1000000

Each measurement runs in its own process (ccrec/benchmarks/scale.py says what is measured
and what is extrapolated) and the report goes to --out/bench_scale.{md,json,png}: the table
with each column's fitted growth exponent and a log-log plot of time and memory against V.
--only=codes (or train/teacher/sampled, eval, ...) runs just those measurements.
"""

import shlex
import sys

import _errors
from absl import flags, logging
from ml_collections import config_flags

from ccrec.benchmarks import scale

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic_1m.py", "Config file.")
_CATALOGS = flags.DEFINE_list(
    "catalogs", [str(v) for v in scale.DEFAULT_CATALOGS], "Catalog sizes V."
)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed training steps per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (compile).")
_EVAL = flags.DEFINE_integer("eval_examples", 2000, "Test prefixes timed per evaluation.")
_QUERIES = flags.DEFINE_integer("queries", 20, "Sessions per scoring measurement.")
_ONLY = flags.DEFINE_list("only", [], "Run only the measurements starting with these names.")
_TIMEOUT = flags.DEFINE_float("timeout", 3600.0, "Seconds per measurement before giving up.")
_OUT = flags.DEFINE_string("out", "docs", "Directory of bench_scale.{md,json,png}.")
_NAME = flags.DEFINE_string("name", "bench_scale", "File name stem of the report.")


def main(argv):
  del argv
  catalogs = [int(v.replace("_", "")) for v in _CATALOGS.value]
  result = scale.run(
      _CONFIG.value,
      catalogs,
      steps=_STEPS.value,
      warmup=_WARMUP.value,
      eval_examples=_EVAL.value,
      queries=_QUERIES.value,
      only=_ONLY.value or None,
      timeout=_TIMEOUT.value,
      log=lambda s: logging.info("[scale] %s", s),
  )
  command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
  for path in scale.write(result, _OUT.value, command, _NAME.value):
    print(path)


if __name__ == "__main__":
  _errors.run(main)
