r"""Runs one notebook's experiment grid without Jupyter, then writes its tables and figures.

For long background runs of the notebooks' full mode (ml-100k); the notebooks and this
script call the same library functions (ccrec/experiments.py) on the same run directories,
so either one reuses what the other finished.

  nohup python launch/ablations.py --mode=full --grid=components --seeds=3 \
      > /tmp/ablations_full.log 2>&1 &
  python launch/ablations.py --mode=full --grid=compression     # 1 seed, reduced M x K cross
  python launch/ablations.py --mode=full --grid=compression --variants=M=2,K=32,TT   # some cells
  python launch/ablations.py --mode=full --grid=sensitivity
  # tables/figures from whatever has finished, training nothing:
  python launch/ablations.py --mode=full --grid=components --seeds=3 --only_cached

--epochs_cap / --codes_steps_cap bound the training of every stage (reduced runs; they go
to their own run directory, e.g. runs/notebooks/full-cap5-codes1000/). --set changes the base
config every variant starts from (repeatable; own run directory too), e.g. the tables of
RESULTS.md, made before configs/eodrec.py distilled at batch 32 with label smoothing:

  python launch/ablations.py --mode=full --grid=components --seeds=3 \
      --set=distill.batch_size=0 --set=train.label_smoothing=0.0
"""

import os

import _errors
from absl import app, flags, logging

from ccrec.workflow import experiments as ex

_MODE = flags.DEFINE_enum("mode", "full", ex.MODES, "smoke: tiny synthetic; full: ml-100k.")
_GRID = flags.DEFINE_enum(
    "grid",
    "components",
    ["components", "headline", "codes_steps", "compression", "sensitivity"],
    "Which notebook's grid.",
)
_SEEDS = flags.DEFINE_integer(
    "seeds", 0, "Seeds per variant (0: 3 for full components and " "headline, else 1)."
)
_VARIANTS = flags.DEFINE_list(
    "variants",
    [],
    "Subset of the grid's variant names (default all); "
    "names with commas are fine: --variants=M=2,K=32,TT.",
)
_EPOCHS_CAP = flags.DEFINE_integer("epochs_cap", 0, "Bound on every stage's epochs (0: none).")
_CODES_CAP = flags.DEFINE_integer("codes_steps_cap", 0, "Bound on code-learning steps (0: none).")
_RUNS = flags.DEFINE_string(
    "runs",
    os.environ.get("CCREC_RUNS", "runs/notebooks"),
    "Root of the run directories (as the notebooks' CCREC_RUNS).",
)
_OUT = flags.DEFINE_string(
    "out",
    "",
    "Tables/figures directory (default: results/ for "
    "unreduced full runs, else <run root>/figures).",
)
_SET = flags.DEFINE_multi_string(
    "set",
    [],
    "FIELD=VALUE override of the base config "
    "(configs/eodrec.py or configs/tiny.py); repeatable.",
)
_ONLY_CACHED = flags.DEFINE_bool("only_cached", False, "Report finished runs; train nothing.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  mode, name = _MODE.value, _GRID.value
  try:
    overrides = ex.parse_overrides(_SET.value)
    ex.apply(ex.base_config(mode), overrides)  # an unknown field or a bad value: a usage error
  except (ValueError, KeyError, AttributeError, TypeError) as e:
    raise app.UsageError(f"--set: {e}") from e
  base, root, out = ex.setup(
      mode,
      _RUNS.value,
      epochs_cap=_EPOCHS_CAP.value,
      codes_steps_cap=_CODES_CAP.value,
      overrides=overrides,
      out=_OUT.value,
  )
  ex.enable_compilation_cache(os.path.join(_RUNS.value, "jax_cache"))
  variants = ex.grid(name, mode)
  if _VARIANTS.value:
    try:
      variants = ex.select_variants(variants, _VARIANTS.value)
    except ValueError as e:
      raise app.UsageError(f"--variants: {e}") from e
  seeds = _SEEDS.value or (3 if mode == "full" and name in ("components", "headline") else 1)
  rows = ex.run_grid(
      base, variants, ex.seeds_for(base, seeds), root, only_cached=_ONLY_CACHED.value
  )
  if not rows:
    print("no finished runs under", root)
    return
  tables = ex.report(name, rows, out, base)["tables"]
  for key, md in tables.items():
    print(f"\n## {key} ({root})\n\n{md}")
  print("\nwritten to", out)


if __name__ == "__main__":
  _errors.run(main)
