"""On-device speed and size benchmark (launch/benchmark.py): item scoring + top-k.

For one catalog (V items, d, M, K) it builds random weights of every model
(timings do not depend on the values) and times, side by side in one process
and interleaved round by round (so machine load hits every method alike):

  teacher_table        fp32 [V+1, d] table: s @ E^T, then top-k
  student_table        the student's composite table materialised: same cost
  student_codes        the numpy runtime's code-table scoring (scoring.CodeScorer)
  student_codes_jax    the Flax CompositionalEmbedding.score + lax.top_k, jitted
  tt_rebuild           the TT model rebuilding every row on each call
  tt_cached            the TT table built once, then as the teacher
  floor_read           one pass over the [M, V+1] code bytes (codes.sum())
  floor_take           np.take of a 256-entry table over every code byte
  encoder              the numpy session encoder + readout (max_len items),
                       the same for every model (not included in the rows above)

for one session (the on-device case) and for a batch of sessions (the
paper's unit, 100). Each row reports the median and min ms per call, the
item representation's bytes and peak extra memory per call (tracemalloc).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import platform
import resource
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ccrec.models.codes import CompositionalEmbedding
from ccrec.models.tt import auto_item_factors, factorize_exact
from ccrec.serving import bundle as bundle_lib
from ccrec.serving import nn
from ccrec.serving.export import bundle_layout, quantize_codebooks, spec_from_config
from ccrec.serving.scoring import CodeScorer, TableScorer, TTScorer, top_k, top_k_columns

CATALOGS = {"ml-100k": 1682, "tmall": 40_000, "1m": 1_000_000}
METHODS = (
    "teacher_table",
    "student_table",
    "student_codes",
    "student_codes_jax",
    "tt_rebuild",
    "tt_cached",
    "floor_read",
    "floor_take",
    "encoder",
)


@dataclasses.dataclass(frozen=True)
class Case:
  num_items: int
  d: int
  num_codebooks: int = 4
  codebook_size: int = 256
  tt_rank: int = 8
  max_len: int = 50
  num_blocks: int = 2
  num_heads: int = 2
  k: int = 20


def model_config(case: Case, kind: str) -> dict[str, Any]:
  """A bundle config for a synthetic model of `kind` ('codes', 'table', 'tt')."""
  config = {
      "num_items": case.num_items,
      "d": case.d,
      "num_blocks": case.num_blocks,
      "num_heads": case.num_heads,
      "inner": 4 * case.d,
      "max_len": case.max_len,
      "readout": "soft_attention",
      "layer_norm_eps": 1e-12,
      "embedding": kind,
  }
  if kind == "codes":
    config.update(
        num_codebooks=case.num_codebooks, codebook_size=case.codebook_size, codebook_dtype="float32"
    )
  if kind == "tt":
    config["tt"] = tt_factors(case)
  return config


def tt_factors(case: Case) -> dict[str, list[int]]:
  """Default TT factorisation (as ccrec.models.tt.TTEmbedding chooses it), 3 cores."""
  return {
      "item_factors": list(auto_item_factors(case.num_items + 1, 3)),
      "d_factors": list(factorize_exact(case.d, 3)),
      "ranks": [case.tt_rank] * 2,
  }


def random_arrays(
    config: dict[str, Any], rng: np.random.Generator, scale: float = 0.05
) -> dict[str, np.ndarray]:
  """Random arrays of every shape a bundle of `config` needs (benchmarks and tests).

  Normal(0, scale) weights (TT cores 0.3, so rows have a useful scale), LayerNorm
  scales 1, uniform codes, int8 codebooks in [-127, 127] with scale/127 per codeword.
  The names and shapes are the model's (`ccrec.serving.export.bundle_layout`).
  """
  out = {}
  layout = bundle_layout(spec_from_config(config), config.get("codebook_dtype", "float32"))
  for name, (shape, dtype) in layout.items():
    if dtype.kind == "u":
      out[name] = rng.integers(0, config["codebook_size"], shape, dtype=dtype)
    elif dtype.kind == "i":
      out[name] = rng.integers(-127, 128, shape).astype(dtype)
    elif "/ln" in name and name.endswith("/scale"):
      out[name] = np.ones(shape, np.float32)
    elif name == "items/codebook_scale":
      out[name] = np.full(shape, scale / 127, np.float32)
    else:
      std = 0.3 if name.startswith("items/core") else scale
      out[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
  if "items/embedding" in out:
    out["items/embedding"][0] = 0.0
  return out


def _time_rounds(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
  """Seconds per call of each fn, interleaved: round r calls every fn once."""
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times


def _peak_bytes(fn: Callable[[], Any]) -> int:
  """Peak bytes numpy allocates during one call (tracemalloc; jax allocations are not seen)."""
  tracemalloc.start()
  try:
    fn()
    return tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def _jax_code_scorer(codes_mv: np.ndarray, codebooks: np.ndarray, k: int):
  """jit(s [B, d] -> lax.top_k(CompositionalEmbedding.score(s), k)) on the model's own code."""
  m, kk, d = codebooks.shape
  module = CompositionalEmbedding(codes_mv.shape[1] - 1, m, kk, d)
  variables = {
      "params": {"codebooks": jax.numpy.asarray(codebooks)},
      "codes": {"codes": jax.numpy.asarray(np.ascontiguousarray(codes_mv.T))},
  }

  @jax.jit
  def run(variables, s):
    return jax.lax.top_k(module.apply(variables, s, method="score"), k)

  return lambda s: jax.block_until_ready(run(variables, s))


def _bundle_sizes(case: Case, arrays_by_kind: dict[str, dict[str, np.ndarray]]) -> dict[str, int]:
  """Bytes on disk of each model's bundle (written to a temporary directory, then removed)."""
  sizes = {}
  with tempfile.TemporaryDirectory(prefix="ccrec_bench_") as tmp:
    variants = {
        "student (fp32 codebooks)": ("codes", None),
        "student (int8 codebooks)": ("codes", "int8"),
        "teacher": ("table", None),
        "tt": ("tt", None),
    }
    for label, (kind, quant) in variants.items():
      arrays = dict(arrays_by_kind[kind])
      config = model_config(case, kind)
      if quant:
        config["codebook_dtype"] = "int8"
        arrays["items/codebooks"], arrays["items/codebook_scale"] = quantize_codebooks(
            arrays["items/codebooks"]
        )
      path = os.path.join(tmp, label.split()[0] + (quant or ""))
      bundle_lib.write_bundle(path, arrays, kind=kind, config=config)
      sizes[label] = bundle_lib.bundle_bytes(path)
      for name in os.listdir(path):  # free the disk before the next (the teacher's is V*d*4)
        os.remove(os.path.join(path, name))
  return sizes


def _calls(scorers: dict, jax_scorer, s: np.ndarray, k: int) -> dict[str, Callable[[], Any]]:
  """One call per method: score every item for the sessions s [B, d], then top-k."""
  if len(s) == 1:
    fns = {name: (lambda sc=sc: top_k(sc.score(s[0]), k)) for name, sc in scorers.items()}
  else:
    fns = {
        name: (lambda sc=sc: top_k_columns(sc.score_columns(s), k)) for name, sc in scorers.items()
    }
  if jax_scorer is not None:
    fns["student_codes_jax"] = lambda: jax_scorer(s)
  return fns


def _floors(codes: np.ndarray, lut: np.ndarray) -> dict[str, Callable[[], Any]]:
  return {"floor_read": codes.sum, "floor_take": lambda: np.take(lut, codes)}


def _encoder_call(params: dict, config: dict, x: np.ndarray, mask: np.ndarray):
  return lambda: nn.readout(params, config, nn.encode(params, config, x, mask), mask)


def run_case(
    case: Case,
    *,
    batch: int = 100,
    repeats: int = 7,
    batch_repeats: int = 3,
    use_jax: bool = True,
    bundle_sizes: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
  """Times every method for one catalog; returns {'case', 'rows', 'sizes', 'bundle_bytes'}."""
  rng = np.random.default_rng(seed)
  arrays = {kind: random_arrays(model_config(case, kind), rng) for kind in ("codes", "table", "tt")}
  codes_cfg = model_config(case, "codes")
  codes = arrays["codes"]["items/codes"]
  books = arrays["codes"]["items/codebooks"]
  tt_cfg = model_config(case, "tt")
  tt_cores = [arrays["tt"][f"items/core_{i}"] for i in range(3)]
  scorers = {
      "teacher_table": TableScorer(arrays["table"]["items/embedding"]),
      "student_codes": CodeScorer(codes, books),
      "tt_rebuild": TTScorer(tt_cores, tt_cfg["tt"]["item_factors"], case.num_items + 1),
  }
  scorers["student_table"] = TableScorer(scorers["student_codes"].table())
  scorers["tt_cached"] = TTScorer(
      tt_cores, tt_cfg["tt"]["item_factors"], case.num_items + 1, cache=True
  )
  item_bytes = {
      "teacher_table": (case.num_items + 1) * case.d * 4,
      "student_table": (case.num_items + 1) * case.d * 4,
      "student_codes": codes.nbytes + books.nbytes,
      "student_codes_jax": codes.nbytes + books.nbytes,
      "tt_rebuild": sum(c.nbytes for c in tt_cores),
      "tt_cached": (case.num_items + 1) * case.d * 4 + sum(c.nbytes for c in tt_cores),
      "floor_read": codes.nbytes,
      "floor_take": codes.nbytes,
  }
  params = {n: a for n, a in arrays["codes"].items() if n.startswith(("encoder/", "readout/"))}
  lut = (
      np.arange(256, dtype=np.uint8)
      if codes.dtype == np.uint8
      else np.arange(65536, dtype=np.uint16)
  )
  sizes = {
      "table_bytes": (case.num_items + 1) * case.d * 4,
      "student_bytes": item_bytes["student_codes"],
      "tt_bytes": item_bytes["tt_rebuild"],
  }
  jax_scorer = _jax_code_scorer(codes, books, case.k) if use_jax else None
  rows = []
  for b, reps in ((1, repeats), (batch, batch_repeats)):
    s = rng.standard_normal((b, case.d), dtype=np.float32) * np.float32(0.5)
    items = rng.integers(1, case.num_items + 1, (b, case.max_len))
    fns = _calls(scorers, jax_scorer, s, case.k)
    fns.update(_floors(codes, lut))
    fns["encoder"] = _encoder_call(
        params, codes_cfg, scorers["student_codes"].lookup(items), items > 0
    )
    if jax_scorer is not None:
      jax_scorer(s)  # compile outside the timed calls
    fns = {name: fns[name] for name in METHODS if name in fns}
    for fn in fns.values():  # warm caches and allocator once
      fn()
    times = _time_rounds(fns, reps)
    for name, fn in fns.items():
      peak = None if name == "student_codes_jax" else _peak_bytes(fn)
      rows.append(
          {
              "num_items": case.num_items,
              "d": case.d,
              "M": case.num_codebooks,
              "K": case.codebook_size,
              "batch": b,
              "method": name,
              "repeats": reps,
              "median_ms": 1e3 * float(np.median(times[name])),
              "min_ms": 1e3 * float(np.min(times[name])),
              "item_bytes": item_bytes.get(name),
              "peak_bytes": peak,
          }
      )
  bundles = _bundle_sizes(case, arrays) if bundle_sizes else {}
  del scorers, arrays
  gc.collect()
  return {"case": dataclasses.asdict(case), "rows": rows, "sizes": sizes, "bundle_bytes": bundles}


def machine() -> dict[str, Any]:
  model = platform.processor() or platform.machine()
  try:
    text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    for line in text.splitlines():
      if line.startswith("Model name:"):
        model = line.split(":", 1)[1].strip()
  except (OSError, subprocess.SubprocessError):
    pass
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count()
  return {
      "cpu": model,
      "cores": cores,
      "numpy": np.__version__,
      "python": platform.python_version(),
      "load_avg": list(os.getloadavg()),
  }


def run(
    cases: Sequence[Case],
    *,
    batch: int = 100,
    repeats: int = 7,
    batch_repeats: int = 3,
    use_jax: bool = True,
    bundle_sizes: bool = True,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
  """Runs every case; returns {'machine', 'date', 'results': [run_case(...)], 'peak_rss_bytes'}."""
  start = datetime.datetime.now(datetime.timezone.utc)
  info = machine()
  results = []
  for case in cases:
    log(f"case V={case.num_items} d={case.d} M={case.num_codebooks} K={case.codebook_size}")
    results.append(
        run_case(
            case,
            batch=batch,
            repeats=repeats,
            batch_repeats=batch_repeats,
            use_jax=use_jax,
            bundle_sizes=bundle_sizes,
            seed=seed,
        )
    )
  info["load_avg_end"] = list(os.getloadavg())
  if use_jax:
    info["jax"] = jax.__version__
  return {
      "machine": info,
      "date": start.isoformat(timespec="seconds"),
      "results": results,
      "batch": batch,
      "repeats": repeats,
      "batch_repeats": batch_repeats,
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "seconds": (datetime.datetime.now(datetime.timezone.utc) - start).total_seconds(),
  }


def _mb(x: float | None) -> str:
  return "" if x is None else f"{x / 2**20:,.2f}"


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
  """The targets for each 1M-item case with d=256, M=4, K=256 (one session, top-20)."""
  out = []
  for res in result["results"]:
    c = res["case"]
    t = {r["method"]: r["median_ms"] for r in res["rows"] if r["batch"] == 1}
    s = t["student_codes"]
    case = f"V={c['num_items']:,} d={c['d']} M={c['num_codebooks']} K={c['codebook_size']}"
    out.append(
        {
            "case": case,
            "headline": (
                c["num_items"] >= 1_000_000
                and c["d"] == 256
                and c["num_codebooks"] == 4
                and c["codebook_size"] == 256
            ),
            "teacher/student": t["teacher_table"] / s,
            "tt_rebuild/student": t["tt_rebuild"] / s,
            "end-to-end teacher/student": (t["encoder"] + t["teacher_table"]) / (t["encoder"] + s),
            "fp32 table / student bytes": res["sizes"]["table_bytes"]
            / res["sizes"]["student_bytes"],
            "student/floor_read": s / t["floor_read"],
            "student/floor_take": s / t["floor_take"],
        }
    )
  return out


def markdown(result: dict[str, Any], command: str = "") -> str:
  m = result["machine"]
  lines = ["# On-device scoring benchmark", ""]
  if command:
    lines += [f"Command: `{command}`", ""]
  lines += [
      f"Machine: {m['cpu']}, {m['cores']} cores (shared; load average "
      f"{m['load_avg'][0]:.1f} at start, {m['load_avg_end'][0]:.1f} at end); "
      + (f"{m['threads']} thread(s) for numpy BLAS and XLA; " if "threads" in m else "")
      + f"Python {m['python']}, numpy {m['numpy']}"
      + (f", jax {m['jax']}" if "jax" in m else "")
      + ".",
      f"Date: {result['date']}. Total {result['seconds']:.0f} s; peak RSS of the "
      f"process {_mb(result['peak_rss_bytes'])} MiB.",
      f"Repeats: {result['repeats']} (one session), {result['batch_repeats']} "
      f"(batch of {result['batch']}); methods interleaved round by round; times are "
      "per call (ms), scoring every item + top-20; `x student` = median time / median "
      "time of `student_codes` at the same batch size. The encoder row (numpy "
      "transformer + readout over a max_len session) is common to every model and "
      "not included in the other rows.",
      "",
  ]
  header = (
      "| V | d | batch | method | median ms | min ms | x student | item bytes (MiB) "
      "| fp32 table / item bytes | peak extra MiB/call |"
  )
  lines += [header, "|" + "---|" * 10]
  for res in result["results"]:
    table_bytes = res["sizes"]["table_bytes"]
    for batch in sorted({r["batch"] for r in res["rows"]}):
      rows = [r for r in res["rows"] if r["batch"] == batch]
      s = next(r["median_ms"] for r in rows if r["method"] == "student_codes")
      for r in rows:
        ib = r["item_bytes"]
        lines.append(
            f"| {r['num_items']:,} | {r['d']} | {batch} | {r['method']} | {r['median_ms']:.3f} "
            f"| {r['min_ms']:.3f} | {r['median_ms'] / s:.2f} | {_mb(ib)} "
            f"| {'' if not ib else f'{table_bytes / ib:,.1f}'} | {_mb(r['peak_bytes'])} |"
        )
  lines += [
      "",
      "Bundle sizes on disk (MiB; encoder weights included):",
      "",
      "| V | d | " + " | ".join(next(iter(result["results"]))["bundle_bytes"] or {}) + " |",
  ]
  if result["results"][0]["bundle_bytes"]:
    lines.append("|" + "---|" * (2 + len(result["results"][0]["bundle_bytes"])))
    for res in result["results"]:
      c = res["case"]
      lines.append(
          f"| {c['num_items']:,} | {c['d']} | "
          + " | ".join(_mb(v) for v in res["bundle_bytes"].values())
          + " |"
      )
  lines += [
      "",
      "Targets (one session, top-20; the headline case is V=1,000,000, "
      "d=256, M=4, K=256: teacher/student >= 10, tt_rebuild/student >= 8, bytes >= 50; "
      "student within 5x of the floor):",
      "",
      "| case | teacher / student | TT rebuild / student | with encoder: teacher / student "
      "| fp32 table / student bytes | student / floor_read | student / floor_take |",
      "|" + "---|" * 7,
  ]
  for t in targets(result):
    mark = " (headline)" if t["headline"] else ""
    lines.append(
        f"| {t['case']}{mark} | {t['teacher/student']:.1f} "
        f"| {t['tt_rebuild/student']:.1f} | {t['end-to-end teacher/student']:.1f} "
        f"| {t['fp32 table / student bytes']:.1f} "
        f"| {t['student/floor_read']:.1f} | {t['student/floor_take']:.2f} |"
    )
  return "\n".join(lines) + "\n"


def cases_from(
    catalogs: Sequence[int],
    dims: Sequence[int],
    num_codebooks: int,
    codebook_size: int,
    tt_rank: int,
) -> list[Case]:
  return [
      Case(int(v), int(d), num_codebooks, codebook_size, tt_rank) for v in catalogs for d in dims
  ]


def parse_catalogs(spec: str) -> list[int]:
  """'ml-100k,tmall,1m' or '1682,40000' -> item counts; 'all' = every preset."""
  if spec == "all":
    return list(CATALOGS.values())
  out = []
  for part in spec.split(","):
    part = part.strip()
    if part in CATALOGS:
      out.append(CATALOGS[part])
    elif part.replace("_", "").isdigit():
      out.append(int(part.replace("_", "")))
    else:
      raise ValueError(f"unknown catalog {part!r}: use {sorted(CATALOGS)} or item counts")
  return out
