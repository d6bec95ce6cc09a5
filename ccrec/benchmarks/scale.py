"""How every stage grows with the catalog: the scaling table (docs/bench_scale.md).

For each catalog size V, in a fresh subprocess per measurement (so each peak resident
memory, ru_maxrss, is that measurement's own, the process's imports included):

* train/<stage>/<loss>: seconds per training epoch of the teacher step, the student's
  pre-training step and the distillation step, full and sampled softmax, at the config's
  model sizes: `steps` timed steps after `warmup` untimed ones (compile excluded; median)
  on random per-prefix batches of the config's shape, times the steps of an epoch of
  EXAMPLES_PER_ITEM * V examples (the synthetic catalogs' ratio; extrapolated, not run).
* codes: the whole codes stage (Gumbel-softmax learning, least-squares refit, refinement,
  de-duplication and the final refit, as ccrec/workflow/codes_stage.py runs them) on a
  structured table (`structured_table`: latent-group centroids plus noise), run in full.
* eval: the full-ranking evaluation step (every item scored, in chunks of eval.item_chunk)
  timed on `eval_examples` random test prefixes and extrapolated to
  TEST_EXAMPLES_PER_ITEM * V of them.
* scoring: one session against the catalog through the codes, full scan vs the pruned exact
  top-10 (ccrec/serving/pruned.py), on clustered codes (`benchmarks.pruned.benchmark`).
* bytes: the teacher's item table (V+1) d float32 and the student's codes + codebooks.

Export is left out (its cost is writing the arrays counted in `bytes`; see
launch/benchmark_export.py). `fit` gives each column's growth exponent (the slope of
log value against log V); `markdown`, `plot` write the report.

  python launch/benchmark_scale.py --catalogs=1682,10000,40000,200000,1000000
"""

from __future__ import annotations

import datetime
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from ccrec.benchmarks import ondevice, pruned
from ccrec.data import hot_mask
from ccrec.evaluation.evaluator import make_eval_step, make_rank_fn
from ccrec.models.build import build_models, model_fns
from ccrec.models.recommender import init_variables
from ccrec.models.views import DistillHeads
from ccrec.ops import sampled
from ccrec.train import code_learning, code_refinement
from ccrec.train import distill as distill_lib
from ccrec.train import teacher as teacher_lib
from ccrec.train.state import TrainState, make_optimizer

# The synthetic catalogs' training and test examples per item (synthetic-40k: 351,268 and
# 25,898 for 40,728 items; synthetic-1m has the same ratios): an epoch at V items.
EXAMPLES_PER_ITEM = 351_268 / 40_728
TEST_EXAMPLES_PER_ITEM = 25_898 / 40_728
DEFAULT_CATALOGS = (1682, 10_000, 40_000, 200_000, 1_000_000)
TRAIN_STAGES = ("teacher", "pretrain", "distill")
LOSSES = ("full", "sampled")


def structured_table(
    num_items: int, d: int, *, num_groups: int | None = None, noise: float = 0.5, seed: int = 0
) -> np.ndarray:
  """A float32 [V+1, d] item table with structure (row 0 zero): each item is the centroid of
  its latent group (one of `num_groups`, default about V / 100) plus `noise` times as much
  Gaussian noise, as trained tables of grouped items look."""
  rng = np.random.default_rng([seed, 7])
  groups = num_groups or max(8, num_items // 100)
  centroids = rng.normal(size=(groups, d)).astype(np.float32) / np.sqrt(d)
  table = np.zeros((num_items + 1, d), np.float32)
  chunk = 1 << 16
  for start in range(1, num_items + 1, chunk):
    n = min(chunk, num_items + 1 - start)
    g = rng.integers(0, groups, n)
    table[start : start + n] = centroids[g] + (noise / np.sqrt(d)) * rng.standard_normal(
        (n, d), np.float32
    )
  return table


def zipf_counts(num_items: int, exponent: float = 0.7, seed: int = 0) -> np.ndarray:
  """int64 [V+1] training counts of a Zipf popularity over a random ranking (row 0 zero)."""
  rng = np.random.default_rng([seed, 8])
  counts = np.zeros(num_items + 1, np.int64)
  base = 1000.0 * np.arange(1, num_items + 1, dtype=np.float64) ** -exponent
  counts[1:] = np.maximum(1, base[rng.permutation(num_items)]).astype(np.int64)
  return counts


def random_batches(
    num_items: int, batch_size: int, max_len: int, counts: np.ndarray, *, seed: int = 0
):
  """Endless per-prefix batches (items int32 [B, L], target int32 [B], weight float32 [B]):
  prefixes of 1..min(L, 12) popularity-drawn items, left-aligned, zero padded."""
  rng = np.random.default_rng([seed, 9])
  cdf = np.cumsum(counts[1:], dtype=np.float64)
  cdf /= cdf[-1]
  while True:
    lengths = rng.integers(1, min(max_len, 12) + 1, batch_size)
    draws = np.searchsorted(cdf, rng.random((batch_size, max_len + 1)), side="right") + 1
    draws = np.minimum(draws, num_items).astype(np.int32)
    items = np.where(np.arange(max_len)[None] < lengths[:, None], draws[:, :max_len], 0)
    yield {
        "items": items.astype(np.int32),
        "target": draws[:, max_len].astype(np.int32),
        "weight": np.ones(batch_size, np.float32),
    }


def _timed(step: Callable[[Any], Any], batches, steps: int, warmup: int) -> list[float]:
  times = []
  for i in range(warmup + steps):
    batch = next(batches)
    t0 = time.perf_counter()
    step(batch)
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  return times


def measure_train(
    config: ml_collections.ConfigDict,
    num_items: int,
    stage: str,
    loss: str,
    *,
    steps: int,
    warmup: int,
) -> dict[str, Any]:
  """Seconds per step of one training stage's jitted step at V = num_items (see module doc)."""
  c = config
  counts = zipf_counts(num_items)
  sampler = (
      sampled.Sampler.from_counts(counts, min(c.train.num_negatives, num_items))
      if loss == "sampled"
      else None
  )
  teacher, student = build_models(c, num_items)
  tx = make_optimizer(c.train)
  key = jax.random.key(0)
  ls = c.train.label_smoothing
  objective = "prefix"
  if stage == "teacher":
    state = TrainState.create(init_variables(teacher, key), tx)
    fn = teacher_lib.make_train_step(teacher, objective, label_smoothing=ls, sampler=sampler)
  elif stage == "pretrain":
    state = TrainState.create(init_variables(student, key), tx)
    table = teacher.apply(init_variables(teacher, jax.random.fold_in(key, 1)), method="table")
    step_fn = distill_lib.make_pretrain_step(
        student,
        objective,
        mixup=bool(c.student.mixup),
        eta=c.student.eta,
        mse_weight=c.student.mse_weight,
        label_smoothing=ls,
        sampler=sampler,
    )
    fn = lambda st, batch, k: step_fn(st, table, batch, k)
  elif stage == "distill":
    heads = DistillHeads(c.model.d, c.model.readout, c.model.init, c.model.init_scale)
    state = distill_lib.create_state(
        init_variables(teacher, key),
        init_variables(student, jax.random.fold_in(key, 1)),
        heads,
        jax.random.fold_in(key, 2),
        c.data.max_len,
        tx,
        student_ema_decay=c.student.ema_decay,
    )
    hot = hot_mask(counts, c.data.hot_fraction)
    fn = distill_lib.make_distill_step(
        teacher,
        student,
        heads,
        hot,
        c.distill,
        c.student,
        objective,
        label_smoothing=ls,
        sampler=sampler,
    )
  else:
    raise ValueError(f"stage must be one of {TRAIN_STAGES}, got {stage!r}")
  holder = {"state": state, "i": 0}

  def one(batch):
    holder["i"] += 1
    holder["state"], metrics = fn(holder["state"], batch, jax.random.key(holder["i"]))
    jax.block_until_ready(metrics)

  batches = random_batches(num_items, c.train.batch_size, c.data.max_len, counts)
  times = _timed(one, batches, steps, warmup)
  per_step = float(np.median(times))
  epoch_steps = math.ceil(EXAMPLES_PER_ITEM * num_items / c.train.batch_size)
  return {
      "seconds_per_step": per_step,
      "steps_per_epoch": epoch_steps,
      "seconds_per_epoch": per_step * epoch_steps,
      "timed_steps": len(times),
  }


def learn_structured_codes(
    config: ml_collections.ConfigDict, num_items: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """The whole codes stage on `structured_table(V, model.d)`: (codes [V+1, M], codebooks
  [M, K, d], report with each step's seconds)."""
  c = config.codes
  table = structured_table(num_items, config.model.d)
  weights = code_refinement.popularity_weights(zipf_counts(num_items), c.weight_power)
  seconds = {}
  t0 = time.perf_counter()
  result = code_learning.learn_codes(
      table, **code_learning.learner_options(c), seed=0, item_weights=weights
  )
  codes, books = result.codes, result.codebooks
  seconds["gumbel"] = time.perf_counter() - t0
  t = time.perf_counter()
  books, mse = code_refinement.refit_codebooks(table, codes, c.codebook_size, item_weights=weights)
  seconds["refit"] = time.perf_counter() - t
  history = []
  if c.refine_iterations > 0:
    t = time.perf_counter()
    codes, books, history = code_refinement.refine_codes(
        table, codes, c.codebook_size, iterations=c.refine_iterations, item_weights=weights
    )
    seconds["refine"] = time.perf_counter() - t
  left = 0
  if c.unique:
    t = time.perf_counter()
    codes, left = code_refinement.deduplicate_codes(table, codes, books, weights)
    books, mse = code_refinement.refit_codebooks(
        table, codes, c.codebook_size, item_weights=weights
    )
    seconds["deduplicate"] = time.perf_counter() - t
  seconds["total"] = time.perf_counter() - t0
  report = code_learning.code_report(codes, c.codebook_size)
  return (
      codes,
      books,
      {
          "seconds": seconds,
          "gumbel_steps": int(result.report["steps"]),
          "refine_iterations": len(history),
          "gumbel_relative_mse": result.report["relative_mse"],
          "final_relative_mse": mse / result.report["table_variance"],
          "collisions": report["collisions"],
          "unresolved": int(left),
      },
  )


def measure_codes(config: ml_collections.ConfigDict, num_items: int) -> dict[str, Any]:
  """The whole codes stage on `structured_table(V, model.d)`, each step timed."""
  return learn_structured_codes(config, num_items)[2]


def measure_eval(
    config: ml_collections.ConfigDict, num_items: int, *, examples: int
) -> dict[str, Any]:
  """Seconds per test example of the teacher's full-ranking evaluation step."""
  c = config
  counts = zipf_counts(num_items)
  teacher, _ = build_models(c, num_items)
  variables = init_variables(teacher, jax.random.key(0))
  encode, score = model_fns(teacher)
  chunk = c.eval.item_chunk or (65_536 if num_items > 65_536 else 0)
  step = make_eval_step(
      make_rank_fn(encode, score, num_items=num_items, item_chunk=chunk),
      hot=hot_mask(counts, c.data.hot_fraction),
  )
  batch_size = c.eval.batch_size
  batches = random_batches(num_items, batch_size, c.data.max_len, counts, seed=1)
  steps = max(1, math.ceil(examples / batch_size))
  times = _timed(lambda b: jax.block_until_ready(step(variables, b)), batches, steps, 1)
  per_example = float(np.sum(times)) / (steps * batch_size)
  test = math.ceil(TEST_EXAMPLES_PER_ITEM * num_items)
  return {
      "seconds_per_example": per_example,
      "test_examples": test,
      "seconds_per_evaluation": per_example * test,
      "item_chunk": chunk,
      "timed_examples": steps * batch_size,
  }


def measure_scoring(
    config: ml_collections.ConfigDict, num_items: int, *, queries: int
) -> dict[str, Any]:
  """One session against the catalog through codes: full scan vs pruned exact top-10."""
  r = pruned.benchmark(
      num_items=num_items,
      d=config.model.d,
      num_codebooks=config.codes.num_codebooks,
      codebook_size=config.codes.codebook_size,
      queries=queries,
  )
  return {
      "full_scan_s": r["full_scan_s_per_query"],
      "pruned_s": r["pruned_s_per_query"],
      "index_build_s": r["index_build_s"],
      "share_scored": r["mean_share_scored"],
      "identical": r["identical"],
  }


def measure_pruned_learned(
    config: ml_collections.ConfigDict, num_items: int, *, k: int = 20, queries: int = 100
) -> dict[str, Any]:
  """Pruned exact top-k against the full scan on codes the codes stage learned
  (`learn_structured_codes`), with their codebooks; queries are noisy item embeddings
  (`benchmarks.pruned.benchmark`). Adds the codes stage's report under 'codes_stage'."""
  codes, books, report = learn_structured_codes(config, num_items)
  codes = np.ascontiguousarray(codes.T)  # [M, V+1]
  codes[:, 0] = 0
  out = pruned.benchmark(k=k, queries=queries, codes=codes, books=np.asarray(books, np.float32))
  out["codes_stage"] = report
  return out


def item_bytes(config: ml_collections.ConfigDict, num_items: int) -> dict[str, int]:
  """Bytes of the item representations: teacher float32 table, student codes + codebooks."""
  m, k, d = config.codes.num_codebooks, config.codes.codebook_size, config.model.d
  code_bytes = 1 if k <= 256 else 2
  return {
      "teacher": (num_items + 1) * d * 4,
      "student": (num_items + 1) * m * code_bytes + m * k * d * 4,
  }


def measurements(num_items: int) -> list[str]:
  """Names of the subprocess measurements at one catalog size."""
  del num_items
  return [f"train/{s}/{loss}" for s in TRAIN_STAGES for loss in LOSSES] + [
      "codes",
      "eval",
      "scoring",
  ]


def measure(
    name: str, config: ml_collections.ConfigDict, num_items: int, options: dict[str, Any]
) -> dict[str, Any]:
  """Runs one named measurement in this process; adds wall seconds and peak rss bytes."""
  t0 = time.perf_counter()
  if name.startswith("train/"):
    _, stage, loss = name.split("/")
    out = measure_train(
        config, num_items, stage, loss, steps=options["steps"], warmup=options["warmup"]
    )
  elif name == "codes":
    out = measure_codes(config, num_items)
  elif name == "eval":
    out = measure_eval(config, num_items, examples=options["eval_examples"])
  elif name == "scoring":
    out = measure_scoring(config, num_items, queries=options["queries"])
  else:
    raise ValueError(f"unknown measurement {name!r}")
  out["wall_s"] = time.perf_counter() - t0
  out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return out


def _worker(argv: Sequence[str]) -> None:
  """python -m ccrec.benchmarks.scale NAME V SPEC.json: one measurement, JSON on stdout."""
  name, num_items, spec = argv[0], int(argv[1]), argv[2]
  with open(spec) as f:
    spec = json.load(f)
  out = measure(name, ml_collections.ConfigDict(spec["config"]), num_items, spec["options"])
  print("RESULT " + json.dumps(out), flush=True)


def run_isolated(
    name: str,
    config: ml_collections.ConfigDict,
    num_items: int,
    options: dict[str, Any],
    timeout: float | None = None,
) -> dict[str, Any]:
  """`measure` in a fresh python process (its own peak memory); {'error': ...} if it fails."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
  with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    json.dump({"config": config.to_dict(), "options": options}, f)
  try:
    proc = subprocess.run(
        [sys.executable, "-m", "ccrec.benchmarks.scale", name, str(num_items), f.name],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout} s"}
  finally:
    os.unlink(f.name)
  for line in proc.stdout.splitlines()[::-1]:
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT ") :])
  return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def _machine() -> dict[str, Any]:
  info = ondevice.machine()
  info["jax"] = jax.__version__
  info["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return info


def run(
    config: ml_collections.ConfigDict,
    catalogs: Sequence[int],
    *,
    steps: int = 10,
    warmup: int = 2,
    eval_examples: int = 2000,
    queries: int = 20,
    only: Sequence[str] | None = None,
    timeout: float | None = None,
    isolate: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
  """Every measurement at every catalog size, each in its own process (`isolate`; False runs
  them in this one, for tests: the peaks are then this process's so far)."""
  start = datetime.datetime.now(datetime.timezone.utc)
  options = {"steps": steps, "warmup": warmup, "eval_examples": eval_examples, "queries": queries}
  rows = []
  for v in catalogs:
    row = {"num_items": int(v), "bytes": item_bytes(config, v)}
    for name in measurements(v):
      if only and not any(name.startswith(o) for o in only):
        continue
      t = time.perf_counter()
      row[name] = (
          run_isolated(name, config, v, options, timeout)
          if isolate
          else measure(name, config, v, options)
      )
      log(
          f"V={v} {name}: {time.perf_counter() - t:.1f} s " f"{row[name].get('error', '')}".rstrip()
      )
    rows.append(row)
  return {
      "machine": _machine(),
      "date": start.isoformat(timespec="seconds"),
      "options": options,
      "config": {
          "d": config.model.d,
          "batch_size": config.train.batch_size,
          "max_len": config.data.max_len,
          "M": config.codes.num_codebooks,
          "K": config.codes.codebook_size,
          "num_negatives": config.train.num_negatives,
          "codes_max_steps": config.codes.max_steps,
          "refine_iterations": config.codes.refine_iterations,
      },
      "rows": rows,
      "seconds": (datetime.datetime.now(datetime.timezone.utc) - start).total_seconds(),
  }


# Column name -> (label, unit, value of a row or None).
def _get(row: dict, name: str, *keys: str) -> float | None:
  value: Any = row.get(name)
  for k in keys:
    if not isinstance(value, dict) or k not in value:
      return None
    value = value[k]
  return None if value is None else float(value)


def columns() -> list[tuple[str, str, Callable[[dict], float | None]]]:
  """(label, unit, getter) of every column of the table, times then memory then bytes."""
  out = []
  for stage in TRAIN_STAGES:
    for loss in LOSSES:
      out.append(
          (
              f"{stage} epoch ({loss})",
              "s",
              lambda r, n=f"train/{stage}/{loss}": _get(r, n, "seconds_per_epoch"),
          )
      )
  out += [
      ("codes stage", "s", lambda r: _get(r, "codes", "seconds", "total")),
      ("evaluation", "s", lambda r: _get(r, "eval", "seconds_per_evaluation")),
      ("scoring full scan", "ms", lambda r: _ms(_get(r, "scoring", "full_scan_s"))),
      ("scoring pruned", "ms", lambda r: _ms(_get(r, "scoring", "pruned_s"))),
  ]
  for stage in TRAIN_STAGES:
    for loss in LOSSES:
      out.append(
          (
              f"peak {stage} ({loss})",
              "MiB",
              lambda r, n=f"train/{stage}/{loss}": _mib(_get(r, n, "peak_rss_bytes")),
          )
      )
  out += [
      ("peak codes stage", "MiB", lambda r: _mib(_get(r, "codes", "peak_rss_bytes"))),
      ("peak evaluation", "MiB", lambda r: _mib(_get(r, "eval", "peak_rss_bytes"))),
      ("peak scoring", "MiB", lambda r: _mib(_get(r, "scoring", "peak_rss_bytes"))),
      ("teacher items", "MiB", lambda r: _mib(r["bytes"]["teacher"])),
      ("student items", "MiB", lambda r: _mib(r["bytes"]["student"])),
  ]
  return out


def _ms(x: float | None) -> float | None:
  return None if x is None else 1e3 * x


def _mib(x: float | None) -> float | None:
  return None if x is None else x / 2**20


def fit(result: dict[str, Any]) -> dict[str, float | None]:
  """Growth exponent of each column: least-squares slope of log value on log V (None with
  fewer than two positive values)."""
  out = {}
  for label, _, get in columns():
    pts = [(r["num_items"], get(r)) for r in result["rows"]]
    pts = [(v, y) for v, y in pts if y is not None and y > 0]
    if len({v for v, _ in pts}) < 2:
      out[label] = None
      continue
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    out[label] = float(np.polyfit(x, y, 1)[0])
  return out


def _fmt(x: float | None) -> str:
  if x is None:
    return "-"
  return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"


def markdown(result: dict[str, Any], command: str = "") -> str:
  """The report: command, machine, date, versions, the table (rows = columns here, one
  column per V, so it fits), the fitted exponents and the notes."""
  m, c = result["machine"], result["config"]
  sizes = [r["num_items"] for r in result["rows"]]
  exps = fit(result)
  lines = ["# Scaling with the catalog size", ""]
  if command:
    lines += ["```", command, "```", ""]
  lines += [
      f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores, "
      f"{m['memory_bytes'] / 2**30:.0f} GiB), python {m['python']}, numpy {m['numpy']}, "
      f"jax {m['jax']}; load average {m['load_avg'][0]:.2f} at the start. "
      f"Total {result['seconds'] / 60:.1f} min.",
      "",
      f"Model: d={c['d']}, batch {c['batch_size']} prefixes of up to {c['max_len']} "
      f"items; codes M={c['M']}, K={c['K']}; sampled softmax with "
      f"min({c['num_negatives']}, V) negatives.",
      "",
  ]
  lines.append("| | unit | " + " | ".join(f"V={v:,}" for v in sizes) + " | exponent |")
  lines.append("|---|---|" + "---|" * len(sizes) + "---|")
  for label, unit, get in columns():
    vals = [_fmt(get(r)) for r in result["rows"]]
    e = exps[label]
    lines.append(
        f"| {label} | {unit} | "
        + " | ".join(vals)
        + " | "
        + ("-" if e is None else f"{e:.2f}")
        + " |"
    )
  o = result["options"]
  lines += [
      "",
      "exponent: slope of log value against log V over the sizes measured (1 = "
      "linear in V; near 0 = a fixed cost dominates at these sizes).",
      "",
      "Notes:",
      "",
      f"- Training epochs are extrapolated: median of {o['steps']} steps after "
      f"{o['warmup']} untimed (compile) ones, on random per-prefix batches drawn by a "
      f"Zipf popularity, times the steps of an epoch of {EXAMPLES_PER_ITEM:.3f} V "
      "examples (the synthetic catalogs' examples per item). Student pre-training and "
      "distillation run at the config's switches (mixup, soft targets, ...).",
      "- The codes stage runs in full (Gumbel-softmax learning to early stopping or "
      f"codes.max_steps={c['codes_max_steps']}, refit, up to {c['refine_iterations']} "
      "refinement iterations, de-duplication, final refit) on a structured table "
      "(latent-group centroids plus noise, about V/100 groups).",
      f"- Evaluation: the full-ranking step timed on {o['eval_examples']} random test "
      f"prefixes, extrapolated to {TEST_EXAMPLES_PER_ITEM:.3f} V test examples.",
      f"- Scoring: one session, top-10 through the codes, mean of {o['queries']} "
      "queries on clustered codes; the pruned search returns the full scan's result.",
      "- Peak memory: ru_maxrss of a fresh process per measurement (imports and "
      "compiled programs included).",
      "- Export is not measured separately: it writes the arrays counted in the two "
      "item-bytes rows (launch/benchmark_export.py measures bundle files).",
      "",
  ]
  errors = [
      (r["num_items"], n, v["error"])
      for r in result["rows"]
      for n, v in r.items()
      if isinstance(v, dict) and "error" in v
  ]
  if errors:
    lines += ["Failed measurements:", ""] + [f"- V={v:,} {n}: {e}" for v, n, e in errors] + [""]
  return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
  """Log-log plot of time (left) and memory (right) against V, written to `path` (PNG)."""
  import matplotlib  # only the report needs it (not every measurement's process)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # after the backend is chosen

  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.5))
  sizes = [r["num_items"] for r in result["rows"]]
  colors = plt.get_cmap("tab20").colors
  for i, (label, unit, get) in enumerate(columns()):
    ax = ax_m if unit == "MiB" else ax_t
    if unit == "ms":
      continue
    pts = [(v, get(r)) for v, r in zip(sizes, result["rows"])]
    pts = [(v, y) for v, y in pts if y is not None and y > 0]
    if pts:
      ax.plot(
          *zip(*pts),
          marker="o",
          label=label,
          color=colors[i % len(colors)],
          linestyle="--" if "sampled" in label else "-",
      )
  for ax, ylabel in ((ax_t, "seconds"), (ax_m, "MiB")):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalog size V (items)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  ax_t.set_title("time per epoch / stage / evaluation")
  ax_m.set_title("peak memory and item bytes")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(
    result: dict[str, Any], directory: str, command: str = "", name: str = "bench_scale"
) -> list[str]:
  """DIRECTORY/NAME.{md,json,png}; returns the paths."""
  os.makedirs(directory, exist_ok=True)
  paths = [os.path.join(directory, f"{name}.{ext}") for ext in ("md", "json", "png")]
  with open(paths[0], "w") as f:
    f.write(markdown(result, command))
  with open(paths[1], "w") as f:
    json.dump({**result, "exponents": fit(result)}, f, indent=1)
  plot(result, paths[2])
  return paths


if __name__ == "__main__":
  _worker(sys.argv[1:])
