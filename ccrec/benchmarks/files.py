"""Speed, size and memory of the exported model files (launch/benchmark_export.py).

For each catalog size V (d, max_len, blocks as ccrec.benchmarks.ondevice.Case) it
builds random weights of every model (timings do not depend on the values):

  student        compositional codes, for each (M, K) asked (float32 codebooks), the
                 codebooks stored and scored in pairs (graph.pack_codes)
  student_unpaired  the first (M, K), one code row per codebook (pair_codes=False),
                 the same model: the pairs' effect side by side (no bundle)
  student_int8   the first (M, K), --quantize=int8 (int8 codebooks and Dense kernels)
  teacher        the full float32 [V, d] table
  tt             tensor-train cores (rank tt_rank)

exports each as .tflite and .onnx, one file with input [1, max_len] (one
session) and one with input [batch, max_len], writes the same weights as a
numpy bundle, and times top-k of full-length random sessions in:

  litert_xnnpack  ai-edge-litert Interpreter with its default XNNPACK delegate
  litert          the same without default delegates (builtin kernels)
  onnxruntime     onnxruntime, CPU provider
  numpy           ccrec.serving.runtime.Recommender on the bundle (int8 bundles
                  quantise the codebooks only: the bundle format has no int8 kernels)

all with one thread. Each (file, runtime) runs in its own subprocess (`worker`),
so its peak memory is its own: peak RSS minus the RSS after imports, before the
model is loaded. Rows report the median and 95th percentile of per-call times.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from ccrec.benchmarks import ondevice as numpy_benchmark
from ccrec.serving import bundle as bundle_lib

RUNTIMES = ("litert_xnnpack", "litert", "onnxruntime", "numpy")
FORMAT_RUNTIMES = {
    "litert": ("litert_xnnpack", "litert"),
    "onnx": ("onnxruntime",),
    "bundle": ("numpy",),
}
_ENV_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclasses.dataclass(frozen=True)
class Case:
  num_items: int
  d: int = 256
  codebooks: tuple[tuple[int, int], ...] = ((4, 256), (3, 256))  # (M, K) of each student
  tt_rank: int = 8
  max_len: int = 50
  num_blocks: int = 2
  num_heads: int = 2
  k: int = 20


def models(case: Case) -> list[dict[str, Any]]:
  """name, M, K, bundle config and quantize option of every model of a case."""
  out = []
  for i, (m, k) in enumerate(case.codebooks):
    base = numpy_benchmark.Case(
        case.num_items,
        case.d,
        m,
        k,
        case.tt_rank,
        case.max_len,
        case.num_blocks,
        case.num_heads,
        case.k,
    )
    config = numpy_benchmark.model_config(base, "codes")
    out.append({"model": "student", "M": m, "K": k, "config": config, "quantize": None})
    if i == 0:
      out.append(
          {
              "model": "student_unpaired",
              "M": m,
              "K": k,
              "config": config,
              "quantize": None,
              "pair_codes": False,
          }
      )
      out.append(
          {
              "model": "student_int8",
              "M": m,
              "K": k,
              "config": dict(config, codebook_dtype="int8"),
              "quantize": "int8",
          }
      )
  base = numpy_benchmark.Case(
      case.num_items,
      case.d,
      tt_rank=case.tt_rank,
      max_len=case.max_len,
      num_blocks=case.num_blocks,
      num_heads=case.num_heads,
      k=case.k,
  )
  out.append(
      {
          "model": "teacher",
          "M": None,
          "K": None,
          "config": numpy_benchmark.model_config(base, "table"),
          "quantize": None,
      }
  )
  out.append(
      {
          "model": "tt",
          "M": None,
          "K": None,
          "config": numpy_benchmark.model_config(base, "tt"),
          "quantize": None,
      }
  )
  return out


def _write_files(
    entry: dict, case: Case, directory: str, batch: int, seed: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
  """Exports one model (both formats, one session and `batch`) and its bundle; returns a
  row per file: format, batch, path, file_bytes (and array_bytes for model files)."""
  from ccrec.serving import convert, export  # the export extra, in the timing subprocess

  config = dict(entry["config"], codebook_dtype="float32") if entry["quantize"] else entry["config"]
  arrays = numpy_benchmark.random_arrays(config, np.random.default_rng(seed))
  spec, variables = export.spec_from_config(config), export.flax_variables(config, arrays)
  name = entry["model"] + (f"_M{entry['M']}" if entry["M"] else "")
  rows = []
  for fmt in convert.FORMATS:
    for b in (None, batch):
      path = os.path.join(directory, f"{name}_b{b or 1}{convert.EXTENSIONS[fmt]}")
      log(f"export {os.path.basename(path)}")
      start = time.perf_counter()
      report = convert.export_file(
          path,
          spec,
          variables,
          fmt=fmt,
          k=case.k,
          batch=b,
          quantize=entry["quantize"],
          pair_codes=entry.get("pair_codes", True),
          overwrite=True,
      )
      rows.append(
          {
              "format": fmt,
              "batch": b or 1,
              "path": path,
              "file_bytes": os.path.getsize(path),
              "array_bytes": report["item_bytes"] + report["encoder_bytes"],
              "export_s": time.perf_counter() - start,
          }
      )
  if not entry.get("pair_codes", True):  # the bundle does not depend on the pairing
    return rows
  bundle_arrays = dict(arrays)
  if entry["quantize"]:
    bundle_arrays["items/codebooks"], bundle_arrays["items/codebook_scale"] = (
        export.quantize_codebooks(arrays["items/codebooks"])
    )
  path = os.path.join(directory, f"{name}_bundle")
  bundle_lib.write_bundle(
      path, bundle_arrays, kind=entry["config"]["embedding"], config=entry["config"], overwrite=True
  )
  rows.append(
      {
          "format": "bundle",
          "batch": None,
          "path": path,
          "file_bytes": bundle_lib.bundle_bytes(path),
          "array_bytes": None,
      }
  )
  return rows


def _status_bytes(field: str) -> int:
  """A /proc/self/status memory field (VmRSS, VmHWM) in bytes; 0 where there is none."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


def _reset_peak() -> None:
  """Resets VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass


def worker(
    path: str,
    runtime: str,
    batch: int,
    max_len: int,
    num_items: int,
    k: int,
    repeats: int,
    seed: int = 0,
) -> dict[str, Any]:
  """In a fresh process: load one file in one runtime, warm up, time `repeats` calls of
  `batch` random full-length sessions. Returns times (s) and the peak RSS (VmHWM, reset
  after the imports) over the RSS before loading the model."""
  if runtime == "numpy":
    from ccrec.serving.runtime import Recommender  # the export extra, in the timing subprocess
  else:
    from ccrec.serving import convert  # the export extra, in the timing subprocess

    if runtime.startswith("litert"):
      import ai_edge_litert.interpreter  # noqa: F401  (imported before the baseline)
    else:
      import onnxruntime  # noqa: F401
  rng = np.random.default_rng(seed)
  items = rng.integers(1, num_items + 1, (batch, max_len)).astype(np.int32)
  _reset_peak()
  baseline = _status_bytes("VmRSS")
  if runtime == "numpy":
    rec = Recommender.load(path, id_space="dense", verify=False)
    sessions = list(items)
    call = lambda: rec.recommend_batch(sessions, k)  # noqa: E731
  else:
    run = convert.load_runner(path, num_threads=1, xnnpack=runtime == "litert_xnnpack")
    call = lambda: run(items)  # noqa: E731
  for _ in range(2):
    call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  peak = _status_bytes("VmHWM")
  return {"times": times, "peak_bytes": max(peak - baseline, 0), "baseline_bytes": baseline}


def _run_worker(
    path: str, runtime: str, batch: int, case: Case, repeats: int, timeout: float
) -> dict[str, Any]:
  env = dict(os.environ, **{v: "1" for v in _ENV_THREADS})
  env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
  code = (
      "import json, sys; from ccrec.benchmarks.files import worker; "
      f"print('@@' + json.dumps(worker({path!r}, {runtime!r}, {batch}, {case.max_len}, "
      f"{case.num_items}, {case.k}, {repeats})))"
  )
  proc = subprocess.run(
      [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
  )
  lines = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
  if proc.returncode or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"[:500]}
  return json.loads(lines[-1][2:])


def run_case(
    case: Case,
    *,
    batch: int = 100,
    repeats: int = 30,
    batch_repeats: int = 5,
    directory: str | None = None,
    seed: int = 0,
    timeout: float = 1800,
    only_models: Sequence[str] | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
  """Exports and times the models of one case (only_models: a subset of 'student',
  'student_unpaired', 'student_int8', 'teacher', 'tt') in `runtimes`; returns {'case',
  'rows'}."""
  rows = []
  with tempfile.TemporaryDirectory(prefix="ccrec_filebench_") as tmp:
    out = directory or tmp
    os.makedirs(out, exist_ok=True)
    for entry in models(case):
      if only_models and entry["model"] not in only_models:
        continue
      files = _write_files(entry, case, out, batch, seed, log)
      for f in files:
        for b in ((1, batch) if f["format"] == "bundle" else (f["batch"],)):
          for runtime in [r for r in FORMAT_RUNTIMES[f["format"]] if r in runtimes]:
            log(f"time {os.path.basename(f['path'])} {runtime} batch {b}")
            got = _run_worker(
                f["path"], runtime, b, case, repeats if b == 1 else batch_repeats, timeout
            )
            row = {
                "num_items": case.num_items,
                "d": case.d,
                "model": entry["model"],
                "M": entry["M"],
                "K": entry["K"],
                "format": f["format"],
                "runtime": runtime,
                "batch": b,
                "file_bytes": f["file_bytes"],
                "array_bytes": f["array_bytes"],
            }
            if "error" in got:
              row["error"] = got["error"]
            else:
              t = 1e3 * np.asarray(got["times"])
              row.update(
                  repeats=len(t),
                  median_ms=float(np.median(t)),
                  p95_ms=float(np.percentile(t, 95)),
                  peak_bytes=got["peak_bytes"],
              )
            rows.append(row)
      if not directory:  # free the disk before the next model (the teacher's is V*d*4)
        for f in files:
          if os.path.isdir(f["path"]):
            for name in os.listdir(f["path"]):
              os.remove(os.path.join(f["path"], name))
          elif os.path.exists(f["path"]):
            os.remove(f["path"])
  return {"case": dataclasses.asdict(case), "rows": rows}


def run(cases: Sequence[Case], **kwargs) -> dict[str, Any]:
  """Runs every case (kwargs as run_case); adds machine, date, versions and total seconds."""
  start = datetime.datetime.now(datetime.timezone.utc)
  info = numpy_benchmark.machine()
  results = [run_case(case, **kwargs) for case in cases]
  info["load_avg_end"] = list(os.getloadavg())
  info["versions"] = _versions()
  return {
      "machine": info,
      "date": start.isoformat(timespec="seconds"),
      "results": results,
      "seconds": (datetime.datetime.now(datetime.timezone.utc) - start).total_seconds(),
  }


def _versions() -> dict[str, str]:
  out = {}
  for package in (
      "jax",
      "litert-converter",
      "ai-edge-litert",
      "jax2onnx",
      "onnxruntime",
      "onnx",
      "numpy",
  ):
    try:
      out[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      out[package] = "not installed"
  return out


def _find(rows: list[dict], **match) -> dict | None:
  for row in rows:
    if all(row.get(k) == v for k, v in match.items()) and "median_ms" in row:
      return row
  return None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
  """The target ratios for each case (LiteRT files, XNNPACK, one session), for the student
  of the case's first (M, K)."""
  out = []
  for res in result["results"]:
    rows = res["rows"]
    m, k = res["case"]["codebooks"][0]
    student = _find(
        rows, model="student", M=m, K=k, format="litert", batch=1, runtime="litert_xnnpack"
    )
    int8 = _find(rows, model="student_int8", format="litert", batch=1, runtime="litert_xnnpack")
    unpaired = _find(
        rows, model="student_unpaired", format="litert", batch=1, runtime="litert_xnnpack"
    )
    teacher = _find(rows, model="teacher", format="litert", batch=1, runtime="litert_xnnpack")
    if not (student and teacher):
      continue
    entry = {
        "num_items": res["case"]["num_items"],
        "d": res["case"]["d"],
        "M": m,
        "K": k,
        "student file / arrays": student["file_bytes"] / student["array_bytes"],
        "teacher / student bytes": teacher["file_bytes"] / student["file_bytes"],
        "teacher / student time": teacher["median_ms"] / student["median_ms"],
    }
    if int8:
      entry["teacher / student_int8 bytes"] = teacher["file_bytes"] / int8["file_bytes"]
    if unpaired and "median_ms" in unpaired:
      entry["unpaired / paired time"] = unpaired["median_ms"] / student["median_ms"]
    out.append(entry)
  return out


def _mb(x: float | None) -> str:
  return "" if x is None else f"{x / 2**20:,.2f}"


def markdown(result: dict[str, Any], command: str = "") -> str:
  m = result["machine"]
  lines = ["# Exported model files: speed, size, memory", ""]
  if command:
    lines += [f"Command: `{command}`", ""]
  lines += [
      f"Machine: {m['cpu']}, {m['cores']} cores (load average {m['load_avg'][0]:.1f} at "
      f"start, {m['load_avg_end'][0]:.1f} at end); one thread per runtime. Versions: "
      + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
      + ".",
      f"Date: {result['date']}. Total {result['seconds']:.0f} s. Times: ms per call "
      "(top-20 of `batch` full-length random sessions, encoder included); peak MiB: "
      "peak RSS of the timing process over its RSS before loading the model.",
      "",
      "| V | d | model | M | K | format | runtime | batch | median ms | p95 ms "
      "| file MiB | arrays MiB | peak MiB |",
      "|" + "---|" * 13,
  ]
  for res in result["results"]:
    for r in res["rows"]:
      timing = (
          f"{r['median_ms']:.3f} | {r['p95_ms']:.3f}"
          if "median_ms" in r
          else f"failed: {r['error']} | "
      )
      lines.append(
          f"| {r['num_items']:,} | {r['d']} | {r['model']} | {r['M'] or ''} "
          f"| {r['K'] or ''} | {r['format']} | {r['runtime']} | {r['batch']} | {timing} "
          f"| {_mb(r['file_bytes'])} | {_mb(r['array_bytes'])} "
          f"| {_mb(r.get('peak_bytes'))} |"
      )
  lines += [
      "",
      "Targets (LiteRT, XNNPACK, one session; targets at V = 1,000,000, "
      "d = 256, M = 4, K = 256: student file <= 1.1x its arrays, teacher / student bytes "
      ">= 80 (>= 150 with int8), teacher / student time >= 10):",
      "",
      "| V | d | M | K | student file / arrays | teacher / student bytes "
      "| teacher / student_int8 bytes | teacher / student time | unpaired / paired time |",
      "|" + "---|" * 9,
  ]
  for t in targets(result):
    int8 = t.get("teacher / student_int8 bytes")
    unpaired = t.get("unpaired / paired time")
    lines.append(
        f"| {t['num_items']:,} | {t['d']} | {t['M']} | {t['K']} "
        f"| {t['student file / arrays']:.3f} "
        f"| {t['teacher / student bytes']:.1f} | {'' if int8 is None else f'{int8:.1f}'} "
        f"| {t['teacher / student time']:.1f} "
        f"| {'' if unpaired is None else f'{unpaired:.2f}'} |"
    )
  return "\n".join(lines) + "\n"
