"""Experiment grids: config overrides of one pipeline, cached runs, shared stages, tables, plots.

A variant (dotted config overrides, `{"distill.beta": 0.1}`) of a base config trains in
ROOT/<slug>/seed<seed>/ through `pipeline.run`; its final metrics are cached as
WORKDIR/result.json, so rerunning a grid trains only what is missing. Before a variant
trains, finished stages of a run under ROOT with equal inputs are copied into its workdir,
where the pipeline restores them: teacher (same seed, data, model, train, eval, parallel),
codes (also codes.*), student_pretrain (also student.*; distill.* does not touch it). So one
teacher and code assignment per seed serve every variant. Notebooks and launch/ablations.py
are thin loops over `run_grid` and `report`; nothing here defines a model or a step.
"""

from __future__ import annotations

import ast
import glob
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from ccrec import atomic
from ccrec import config as config_lib
from ccrec.workflow import pipeline, plots
from ccrec.workflow import workdir as workdir_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))  # the repository
MODES = ("smoke", "full")
RESULT = "result.json"
# Stage -> config sections its checkpoint depends on (cumulative, in pipeline order).
STAGE_INPUTS = (
    ("teacher", ("seed", "data", "model", "train", "eval", "parallel")),
    ("codes", ("codes",)),
    ("student_pretrain", ("student",)),
)

# The paper's ablation (Table 4 / docs/method.md §6): each a switch of the full method.
COMPONENTS = {
    "full": {},
    "base": {"distill.enabled": False},
    "w/o-c": {"distill.contrastive": False},
    "w/o-b": {"distill.bidirectional": False},
    "w/o-s": {"distill.soft_targets": False},
    "w/o-m": {"student.mixup": False},
}
# The comparisons behind the headline (RESULTS.md): the method against the same student and
# teacher trained as long without any distillation term ('no-KD': the distillation stage with
# its contrastive and soft-target terms off, so the teacher trains on its own L_rec and the
# student on its L_rec and L_mse, each as long as under distillation), against the pre-trained
# student and the stage-1 teacher ('base'), without the encoder warm start, and started from
# the strongest teacher ccrec trains (configs/teacher.py's R-Drop as stage 1).
HEADLINE = {
    "full": {},
    "no-KD": {"distill.contrastive": False, "distill.soft_targets": False},
    "base": {"distill.enabled": False},
    "no init_from_teacher": {"student.init_from_teacher": False},
    "R-Drop teacher": {"train.rdrop": 1.0, "train.fused_chunk": 128},
}
TEACHER = {"stages": ("teacher",)}
# What each step of the codes stage adds (teacher and codes stages only; the teacher scored
# through each step's codes on validation): the Gumbel-softmax autoencoder's codes alone,
# then the least-squares refit of the codebooks, the alternating refinement, de-duplication.
_CODES_ONLY = {"stages": ("teacher", "codes")}
CODES_STEPS = {
    "autoencoder": {
        **_CODES_ONLY,
        "codes.refit": False,
        "codes.refine_iterations": 0,
        "codes.unique": False,
    },
    "+ refit": {**_CODES_ONLY, "codes.refine_iterations": 0, "codes.unique": False},
    "+ refinement": {**_CODES_ONLY, "codes.unique": False},
    "+ de-duplication": _CODES_ONLY,
}  # the stage-1 teacher alone (restored, evaluated)
TT = {"student.embedding": "tt"}  # configs/tt.py = configs/eodrec.py + this override
SWEEPS = {  # the paper's grids (beta, gamma, eta; mixup off is the 'w/o-m' component)
    "distill.beta": (0.001, 0.01, 0.1, 0.5, 1.0),
    "distill.gamma": (0.1, 0.3, 0.5, 0.7, 1.0),
    "student.eta": (0.5, 0.6, 0.7, 0.8, 0.9),
}
MK_FULL = (1, 2, 3, 4, 5), (32, 128, 256)  # K=512 > catalog/4: bigger than the table (CR < 1)


# ---------------------------------------------------------------------------- configs


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file (absolute, or relative to the repository root)."""
  path = path if os.path.isabs(path) else os.path.join(ROOT, path)
  return config_lib.from_file(path)


def base_config(
    mode: str, epochs_cap: int = 0, codes_steps_cap: int = 0
) -> ml_collections.ConfigDict:
  """smoke: configs/tiny.py; full: configs/eodrec.py (ml-100k); caps > 0 bound every stage's
  epochs and the code-learning steps (reduced runs, kept apart by `runs_root`)."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  c = load_config_file("configs/tiny.py" if mode == "smoke" else "configs/eodrec.py")
  caps = {f: epochs_cap for f in ("train.epochs", "student.pretrain_epochs", "distill.epochs")}
  caps["codes.max_steps"] = codes_steps_cap
  return apply(c, {f: min(config_lib.get(c, f), cap) for f, cap in caps.items() if cap > 0})


def runs_root(
    runs: str,
    mode: str,
    epochs_cap: int = 0,
    codes_steps_cap: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> str:
  """Runs of different base configs never share a directory (config.json would clash)."""
  return os.path.join(
      runs,
      mode
      + (f"-cap{epochs_cap}" if epochs_cap > 0 else "")
      + (f"-codes{codes_steps_cap}" if codes_steps_cap > 0 else "")
      + (f"-set-{_values(overrides).replace(os.sep, '_')}" if overrides else ""),
  )


def setup(
    mode: str,
    runs: str,
    *,
    epochs_cap: int = 0,
    codes_steps_cap: int = 0,
    overrides: Mapping[str, Any] | None = None,
    out: str = "",
) -> tuple[ml_collections.ConfigDict, str, str]:
  """(base config, run root, tables/figures directory) of a grid: the rule launch/ablations.py
  and the notebooks share. `overrides` (dotted field -> value) change the base every variant
  starts from; those equal to the base's value are dropped (same directory);
  tables go to results/ only for uncapped, unmodified full runs, else to <root>/figures."""
  plain = base_config(mode, epochs_cap, codes_steps_cap)
  overrides = {
      k: v for k, v in (overrides or {}).items() if _norm(config_lib.get(plain, k)) != _norm(v)
  }
  base = apply(plain, overrides) if overrides else plain
  root = runs_root(runs, mode, epochs_cap, codes_steps_cap, overrides)
  reduced = mode != "full" or epochs_cap > 0 or codes_steps_cap > 0 or bool(overrides)
  return (
      base,
      root,
      out or (os.path.join(root, "figures") if reduced else os.path.join(ROOT, "results")),
  )


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
  """['distill.batch_size=16', 'model.readout=soft_attention'] -> {field: value}; values are
  Python literals where they parse as one (16, 0.5, True, (1, 2)), else strings."""
  out = {}
  for item in items:
    field, sep, text = item.partition("=")
    if not sep or not field.strip():
      raise ValueError(f"{item!r} is not FIELD=VALUE (e.g. distill.batch_size=16)")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    out[field.strip()] = value
  return out


def enable_compilation_cache(directory: str) -> None:
  """Persistent XLA cache: every variant and rerun compiles the same steps, so reuse them.

  A cache the environment already names (JAX_COMPILATION_CACHE_DIR) is kept: its owner
  chose it (the test suite shares one across its processes and the notebook kernels)."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  jax.config.update("jax_compilation_cache_dir", os.path.abspath(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def apply(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """A validated, locked copy of `config` with dotted `overrides` set (unknown: KeyError)."""
  c = config_lib.lock(ml_collections.ConfigDict(config.to_dict()))
  c.update_from_flattened_dict(dict(overrides))
  config_lib.validate(c)
  return c


def slug(overrides: Mapping[str, Any], base: ml_collections.ConfigDict) -> str:
  """Directory name of a variant; overrides equal to the base's values are dropped, so the
  same configuration reached from different grids shares one workdir."""
  return (
      _values({k: v for k, v in overrides.items() if _norm(config_lib.get(base, k)) != _norm(v)})
      or "default"
  )


def _norm(v: Any) -> str:
  return "-".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


def _values(overrides: Mapping[str, Any]) -> str:
  return "+".join(f"{k}={_norm(v)}" for k, v in sorted(overrides.items()))


# ---------------------------------------------------------------------------- runs and reuse


def reuse_stages(config: ml_collections.ConfigDict, workdir: str, share_root: str) -> list[str]:
  """Copies the stages with equal inputs from the finished run (one with result.json) under
  `share_root` sharing the longest stage prefix; existing stages are kept. Returns those copied."""
  mine = workdir_lib.flatten(workdir_lib.config_dict(config))
  wanted = [
      s
      for s, _ in STAGE_INPUTS
      if s in config.stages and (s != "codes" or config.student.embedding == "codes")
  ]
  best, best_depth = None, 0
  for result in sorted(glob.glob(os.path.join(share_root, "*", "*", RESULT))):
    donor = os.path.dirname(result)
    if os.path.abspath(donor) == os.path.abspath(workdir):
      continue
    # Sections (top-level keys) that differ; a field the donor predates is no difference
    # while it keeps its default (workdir.config_differences).
    differ = {
        k.split(".")[0]
        for k in workdir_lib.config_differences(
            workdir_lib.flatten(workdir_lib.read_config_json(donor)), mine
        )
    }
    depth, sections = 0, []
    for stage, extra in STAGE_INPUTS:
      sections += extra
      done = os.path.join(donor, stage, "codes.npz" if stage == "codes" else "")
      if stage not in wanted or not os.path.exists(done) or differ & set(sections):
        break
      depth += 1
    if depth > best_depth:
      best, best_depth = donor, depth
  copied = []
  for stage in wanted[:best_depth]:
    target = os.path.join(workdir, stage)
    if not os.path.exists(target):
      shutil.copytree(os.path.join(best, stage), target)
      copied.append(stage)
  if copied:
    logging.info("%s: reusing %s from %s", workdir, ", ".join(copied), best)
  return copied


def read_result(workdir: str) -> dict | None:
  """A finished variant's metrics; None if not finished, or if result.json is damaged (it is
  a summary of the workdir's checkpoints and is written again from them)."""
  path = os.path.join(workdir, RESULT)
  if os.path.exists(path):
    try:
      with open(path) as f:
        result = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      logging.warning("%s is damaged (%s): evaluating the workdir again", path, e)
      return None
    return result if isinstance(result, dict) else None
  return None


def run_variant(
    config: ml_collections.ConfigDict, workdir: str, share_root: str | None = None
) -> dict[str, Any]:
  """pipeline.run, cached: WORKDIR/result.json is returned when present. Another config in the
  workdir is a WorkdirError, cached or not; stages of runs under `share_root` are reused."""
  workdir_lib.prepare(workdir, config)
  cached = read_result(workdir)
  if cached is not None:
    return cached
  if share_root:
    reuse_stages(config, workdir, share_root)
  metrics = {
      k: v if isinstance(v, str) else float(v) for k, v in pipeline.run(config, workdir).items()
  }
  atomic.write_json(os.path.join(workdir, RESULT), metrics)
  return metrics


def read_cached(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """WORKDIR/result.json for reporting, None if absent. As workdir.prepare, a config field
  added to the schema after the run is no difference while it keeps its default; any other
  difference is an error."""
  result = read_result(workdir)
  if result is None:
    return None
  saved = workdir_lib.flatten(workdir_lib.read_config_json(workdir))
  mine = workdir_lib.flatten(workdir_lib.config_dict(config))
  differ = workdir_lib.config_differences(saved, mine)
  if differ:
    shown = [f"{k}: saved {saved.get(k)!r} vs now {mine.get(k)!r}" for k in differ[:8]]
    raise workdir_lib.WorkdirError(f"{workdir} ran another config: differing {shown}")
  if mine.keys() - saved.keys():
    logging.info(
        "%s predates config fields %s (at their defaults)",
        workdir,
        sorted(mine.keys() - saved.keys()),
    )
  return result


def run_grid(
    base: ml_collections.ConfigDict,
    variants: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    root: str,
    only_cached: bool = False,
) -> list[dict]:
  """Runs every (variant, seed) under `root`, seed-major; rows {"variant", "seed", "workdir",
  "overrides", **metrics}. `only_cached` skips (does not train) runs without result.json."""
  rows = []
  for seed in seeds:
    for name, overrides in variants.items():
      config = apply(base, {**overrides, "seed": seed})
      workdir = os.path.join(root, slug(overrides, base), f"seed{seed}")
      if only_cached:
        metrics = read_cached(config, workdir)
        if metrics is None:
          continue
      else:
        logging.info("variant %s seed %d -> %s", name, seed, workdir)
        metrics = run_variant(config, workdir, share_root=root)
      rows.append(
          {
              "variant": name,
              "seed": seed,
              "workdir": workdir,
              "overrides": dict(overrides),
              **codes_report(workdir),
              **metrics,
          }
      )
  return rows


def codes_report(workdir: str) -> dict[str, float]:
  """WORKDIR/codes/report.json's numbers as 'codes/<name>' (unique_codes, collisions, ...), plus
  'codes/distinct_codes': distinct full codes of what the student got (after refinement and
  de-duplication when they ran)."""
  path = os.path.join(workdir, "codes", "report.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    out = {f"codes/{k}": float(v) for k, v in json.load(f).items() if isinstance(v, (int, float))}
  for stage in ("final_", "refined_", ""):  # the codes the student got: the last step that ran
    if f"codes/{stage}unique_codes" in out:
      out["codes/distinct_codes"] = out[f"codes/{stage}unique_codes"]
      break
  return out


def _deployed_mse(row: Mapping[str, Any]) -> float:
  """The (weighted) reconstruction error of the codes the last step that ran produced."""
  for key in ("codes/final_mse", "codes/refined_mse", "codes/refit_mse", "codes/mse"):
    if key in row:
      return row[key]
  return math.nan


def seeds_for(base: ml_collections.ConfigDict, n: int) -> list[int]:
  return [int(base.seed) + i for i in range(n)]


# ---------------------------------------------------------------------------- grids


def grid(name: str, mode: str) -> dict[str, dict[str, Any]]:
  """Variant name -> overrides. Smoke grids are tiny. Full M x K: a cross through the paper's
  Tmall setting M=4, K=32 (M in 1..5 at K=32, K in {32, 128, 256} at M=4) plus its RetailRocket
  setting M=3, K=256: 8 cells of the 5 x 4 grid."""
  smoke = mode == "smoke"
  if name == "components":
    return {k: COMPONENTS[k] for k in (("full", "base") if smoke else COMPONENTS)}
  if name == "headline":
    return {k: HEADLINE[k] for k in (("full", "no-KD") if smoke else HEADLINE)}
  if name == "codes_steps":
    return dict(CODES_STEPS)
  if name == "compression":
    cells = (
        [(1, 8), (2, 8)]
        if smoke  # tiny: 60 items, M=2 K=8 is the base
        else [(m, 32) for m in MK_FULL[0]] + [(4, k) for k in MK_FULL[1] if k != 32] + [(3, 256)]
    )
    return {
        **{f"M={m},K={k}": {"codes.num_codebooks": m, "codes.codebook_size": k} for m, k in cells},
        "teacher": TEACHER,
        "TT": TT,
    }
  if name == "sensitivity":
    values = (
        {"distill.beta": (0.01, 1.0), "distill.gamma": (0.3,), "student.eta": (0.8,)}
        if smoke
        else SWEEPS
    )
    out = {f"{field.split('.')[-1]}={v}": {field: v} for field, vs in values.items() for v in vs}
    return out if smoke else {**out, "no mixup": COMPONENTS["w/o-m"]}
  raise ValueError(
      f"unknown grid {name!r} (components, headline, codes_steps, compression, " "sensitivity)"
  )


def select_variants(variants: Mapping[str, Any], requested: Sequence[str]) -> dict[str, Any]:
  """The variants named in `requested`, a comma-split list (absl's list flags split on commas)
  in which names that contain commas ('M=2,K=32') arrive in pieces and are joined back.
  Unknown names raise ValueError listing the grid's names."""
  out, piece = {}, None
  for part in requested:
    piece = part if piece is None else f"{piece},{part}"
    if piece in variants:
      out[piece], piece = variants[piece], None
    elif not any(name.startswith(piece + ",") for name in variants):
      raise ValueError(f"unknown variant {piece!r}; the grid has {list(variants)}")
  if piece is not None:
    raise ValueError(f"unknown variant {piece!r}; the grid has {list(variants)}")
  return out


# ---------------------------------------------------------------------------- tables


def summarize(rows: Sequence[dict], keys: Sequence[str]) -> list[dict]:
  """Per variant (first-appearance order): n, and mean and sd (ddof=1; NaN if n=1) of keys."""
  out = []
  for name in dict.fromkeys(r["variant"] for r in rows):
    group = [r for r in rows if r["variant"] == name]
    entry = {
        "variant": name,
        "n": len(group),
        "overrides": group[0]["overrides"],
        "workdir": group[0]["workdir"],
    }
    for k in keys:
      values = np.array([r[k] for r in group if k in r], dtype=np.float64)
      entry[f"{k}/mean"] = float(values.mean()) if values.size else math.nan
      entry[f"{k}/sd"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
    out.append(entry)
  return out


def markdown_table(
    summary: Sequence[dict], columns: Mapping[str, str], percent: Sequence[str] = ()
) -> str:
  """`columns`: metric key -> header; "mean ± sd" (sd left out when n = 1), `percent` x100."""

  def cell(e, k):
    mean, sd, scale = e[f"{k}/mean"], e[f"{k}/sd"], 100.0 if k in percent else 1.0
    return (
        "-"
        if math.isnan(mean)
        else f"{mean * scale:.2f}" + ("" if math.isnan(sd) else f" ± {sd * scale:.2f}")
    )

  lines = [
      "| variant | n | " + " | ".join(columns.values()) + " |",
      "|" + "---|" * (len(columns) + 2),
  ]
  lines += [
      f"| {e['variant']} | {e['n']} | " + " | ".join(cell(e, k) for k in columns) + " |"
      for e in summary
  ]
  return "\n".join(lines)


# ---------------------------------------------------------------------------- reports

FOUR = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")
UNIQUE = "codes/distinct_codes"  # of the student's codes: items sharing one tie in every ranking


def _test(metric: str, who: str = "student") -> str:
  return f"{who}/test/{metric}"


def report(
    name: str, rows: Sequence[dict], out_dir: str, base: ml_collections.ConfigDict
) -> dict[str, dict]:
  """Tables (markdown, saved as OUT_DIR/<table>.md and .json) and figures (OUT_DIR/*.png) of
  a grid's rows, in the paper's layouts: Table 4 (components); Table 3 and the M x K sweep
  (compression); the beta/gamma/eta figures (sensitivity). Returns {"tables", "figures"}."""
  four = [_test(m) for m in FOUR]
  heads = {k: k.split("/")[-1].replace("NDCG", "N") for k in four}
  tables, figures = {}, {}
  if name == "components":
    extra = [_test("NDCG@10", "student_mixed"), _test("NDCG@10", "teacher")]
    summary = summarize(rows, four + extra + [UNIQUE])
    tables[name] = summary, markdown_table(
        summary,
        {
            **heads,
            extra[0]: "N@10 mixup table (not compressed)",
            extra[1]: "teacher N@10",
            UNIQUE: "unique codes",
        },
        percent=four + extra,
    )
    figures[name] = plots.bar_chart(
        summary,
        [_test("HR@10"), _test("NDCG@10")],
        "components (student, test), mean ± sd over seeds",
    )
  elif name == "headline":
    keys = [
        _test("NDCG@10"),
        _test("HR@10"),
        _test("NDCG@10", "teacher"),
        _test("HR@10", "teacher"),
        "student/valid/NDCG@10",
        "teacher/valid/NDCG@10",
    ]
    summary = summarize(rows, keys)
    tables[name] = summary, markdown_table(
        summary,
        {
            keys[0]: "student N@10",
            keys[1]: "student HR@10",
            keys[2]: "teacher N@10",
            keys[3]: "teacher HR@10",
            keys[4]: "student valid N@10",
            keys[5]: "teacher valid N@10",
        },
        percent=keys,
    )
  elif name == "codes_steps":
    through = "codes/teacher_through_codes/valid/NDCG@10"
    keys = [
        through,
        "codes/teacher_through_codes/valid/HR@10",
        "teacher/valid/NDCG@10",
        "codes/distinct_codes",
        "codes/deployed_mse",
    ]
    summary = summarize([{**r, "codes/deployed_mse": _deployed_mse(r)} for r in rows], keys)
    tables[name] = summary, markdown_table(
        summary,
        {
            keys[0]: "teacher through codes, valid N@10",
            keys[1]: "valid HR@10",
            keys[2]: "teacher valid N@10",
            keys[3]: "distinct codes",
            keys[4]: "weighted MSE",
        },
        percent=keys[:3],
    )
  elif name == "compression":
    size = [
        "student/compression/paper_ratio",
        "student/compression/bytes_ratio",
        "student/compression/compressed_bytes",
    ]
    cells = [r for r in rows if "codes.num_codebooks" in r["overrides"]]
    summary = summarize(cells, size + four + [UNIQUE])
    tables[name] = summary, markdown_table(
        summary,
        {
            size[0]: "paper CR",
            size[1]: "bytes CR",
            size[2]: "bytes",
            UNIQUE: "unique codes",
            _test("HR@10"): "HR@10",
            _test("NDCG@10"): "N@10",
        },
        percent=four,
    )

    def pick(label, keep, who="student"):  # the paper's Table 3 rows, student metric keys
      return [
          {**r, "variant": label, **{_test(m): r[_test(m, who)] for m in FOUR}}
          for r in rows
          if keep(r)
      ]

    main = (
        pick("teacher", lambda r: r["variant"] == "teacher", "teacher")
        + pick("OD-Rec (TT)", lambda r: r["variant"] == "TT")
        + pick(
            "student (EODRec)",
            lambda r: r in cells
            and all(config_lib.get(base, k) == v for k, v in r["overrides"].items()),
        )
    )
    table3 = summarize(main, four + size + [UNIQUE])
    tables[name + "_main"] = table3, markdown_table(
        table3,
        {**heads, size[0]: "paper CR", size[1]: "bytes CR", UNIQUE: "unique codes"},
        percent=four,
    )
    refs = {e["variant"]: e for e in table3 if e["variant"] != "student (EODRec)"}
    figures[name] = plots.size_curve(
        summary, _test("NDCG@10"), refs, "student test NDCG@10 vs item-representation size"
    )
    for e in table3:
      if e["variant"] == "student (EODRec)":
        figures[name + "_usage"] = plots.usage_heatmap(
            e["workdir"],
            f"codeword usage, M={base.codes.num_codebooks} " f"K={base.codes.codebook_size}",
        )
  elif name == "sensitivity":
    keys = [_test("HR@10"), _test("NDCG@10")]
    summary = summarize(rows, keys)
    tables[name] = summary, markdown_table(summary, {k: heads[k] for k in keys}, percent=keys)
    figures[name] = plots.sweep_plot(
        summary, _test("NDCG@10"), list(SWEEPS), "sensitivity (student, test NDCG@10)"
    )
  else:
    raise ValueError(f"unknown grid {name!r}")
  os.makedirs(out_dir, exist_ok=True)
  for key, (summary, md) in tables.items():  # OUT_DIR/<table>.md and .json (the summary)
    with atomic.writing(os.path.join(out_dir, key + ".md")) as f:
      f.write(md + "\n")
    atomic.write_json(
        os.path.join(out_dir, key + ".json"), list(summary), sort_keys=False, default=str
    )
  plt = plots.pyplot()
  for key, fig in figures.items():
    fig.savefig(os.path.join(out_dir, key + ".png"), dpi=120)
    plt.close(fig)
  return {"tables": {k: md for k, (_, md) in tables.items()}, "figures": figures}
