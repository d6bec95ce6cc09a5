r"""Times the preprocessing of a Yoochoose-sized synthetic click log.

  python launch/benchmark_preprocess.py --workdir=/tmp/ccrec_bench

Writes a synthetic yoochoose-clicks.dat (default 9M sessions, ~33M clicks,
50k items; generated in a child process so it does not count towards the
peak memory), then runs it through the full `yoochoose` recipe: parse, sort
into sessions, filter, split by time, remap ids, prefix-augment test (and,
timed separately, train) sessions, save. Prints the time of each stage and
the peak resident memory (resource.getrusage, this process only).
"""

import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import _errors
from absl import app, flags

from ccrec import data
from ccrec.benchmarks import synthetic_logs
from ccrec.data import protocols, readers

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/ccrec_bench", "where the log and output go")
_SESSIONS = flags.DEFINE_integer("num_sessions", 9_000_000, "sessions in the synthetic log")
_ITEMS = flags.DEFINE_integer("num_items", 50_000, "catalog size")
_MEAN_LENGTH = flags.DEFINE_float("mean_length", 3.67, "mean clicks per session")
_SEED = flags.DEFINE_integer("seed", 0, "generator seed")
_GENERATE_ONLY = flags.DEFINE_bool("generate_only", False, "write the log and exit")
_MAX_LEN = flags.DEFINE_integer("max_len", 50, "prefix truncation for the augmentation")


def _log_path() -> str:
  return os.path.join(
      _WORKDIR.value,
      f"yoochoose-clicks-{_SESSIONS.value}-{_ITEMS.value}-"
      f"{_MEAN_LENGTH.value}-{_SEED.value}.dat",
  )


def _peak_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.makedirs(_WORKDIR.value, exist_ok=True)
  path = _log_path()
  if _GENERATE_ONLY.value:
    start = time.perf_counter()
    log = synthetic_logs.yoochoose_like_log(
        _SESSIONS.value, _ITEMS.value, mean_length=_MEAN_LENGTH.value, seed=_SEED.value
    )
    synthetic_logs.write_yoochoose(log, path)
    print(f"wrote {len(log.session):,} clicks to {path} in {time.perf_counter() - start:.1f} s")
    return
  if not os.path.exists(path):
    subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--generate_only",
            f"--workdir={_WORKDIR.value}",
            f"--num_sessions={_SESSIONS.value}",
            f"--num_items={_ITEMS.value}",
            f"--mean_length={_MEAN_LENGTH.value}",
            f"--seed={_SEED.value}",
        ],
        check=True,
    )
  size_gib = os.path.getsize(path) / 2**30
  times = {}
  t0 = time.perf_counter()
  log = readers.read_yoochoose(path)
  times["parse (incl. sha256)"] = time.perf_counter() - t0
  t = time.perf_counter()
  recipe = data.DATASETS["yoochoose"].recipe.replace(max_len=_MAX_LEN.value)
  ds = protocols.session(log, recipe, "yoochoose-synthetic")
  times["recipe + session protocol"] = time.perf_counter() - t
  t = time.perf_counter()
  data.save(ds, os.path.join(_WORKDIR.value, "prepared"))
  times["save"] = time.perf_counter() - t
  total = time.perf_counter() - t0
  t = time.perf_counter()
  train_examples = ds.train_examples(_MAX_LEN.value)
  times["train prefix augmentation (extra)"] = time.perf_counter() - t
  clicks, sessions = len(log), int(log.session.max())
  del log
  print(
      f"log: {path} ({size_gib:.2f} GiB, {clicks:,} clicks, {sessions:,} sessions, "
      f"{_ITEMS.value:,} items)"
  )
  print(data.statistics_table([ds]))
  print(f"train examples materialised: {len(train_examples):,}")
  for stage, seconds in times.items():
    print(f"  {stage:36s} {seconds:7.1f} s")
  print(f"  {'total (parse -> saved dataset)':36s} {total:7.1f} s")
  print(f"peak memory (ru_maxrss): {_peak_gib():.2f} GiB")
  print(
      f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
      f"python {platform.python_version()}"
  )


if __name__ == "__main__":
  _errors.run(main)
