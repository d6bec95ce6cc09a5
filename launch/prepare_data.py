r"""Prepares a session dataset and prints its statistics table.

  python launch/prepare_data.py --dataset=ml-100k
  python launch/prepare_data.py --dataset=diginetica --input=/data/train-item-views.csv
  python launch/prepare_data.py --dataset=synthetic-40k   # generated: the paper's Tmall sizes
  python launch/prepare_data.py --dataset=pickle --input=train.txt --test_input=test.txt \
      --output=/data/tmall

Writes data.npz + manifest.json to --output (default: the cache,
$CCREC_DATA_DIR or ~/.cache/ccrec, where ccrec.data.load_dataset finds it).
An --output already holding a dataset prepared from other data or settings is
kept (an error) unless --overwrite.
Recipe flags left unset keep the dataset's standard recipe (docs/data.md).
"""

from collections.abc import Sequence

import _errors
from absl import app, flags

from ccrec import data
from ccrec.data import synthetic_catalogs

_DATASET = flags.DEFINE_string(
    "dataset",
    "ml-100k",
    f"one of {sorted(data.DATASETS)}, a generated catalog "
    f"{sorted(synthetic_catalogs.PRESETS)}, 'pickle' (SR-GNN-style train/test pickles), or a "
    "path to a raw file or a prepared directory",
)
_INPUT = flags.DEFINE_string(
    "input",
    None,
    "raw file (datasets downloaded by hand; optional "
    "local copy for ml-100k; train pickle for --dataset=pickle)",
)
_TEST_INPUT = flags.DEFINE_string("test_input", None, "test pickle for --dataset=pickle")
_OUTPUT = flags.DEFINE_string(
    "output", None, "directory for the prepared dataset " "(default: inside --data_dir)"
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "cache root (default $CCREC_DATA_DIR or " "~/.cache/ccrec)"
)
_REBUILD = flags.DEFINE_bool("rebuild", False, "prepare again even if a cached copy matches")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "replace a prepared dataset in --output that " "was built from other data or settings",
)
_PROTOCOL = flags.DEFINE_enum("protocol", None, ["loo", "session"], "default: the dataset's")
_MAX_LEN = flags.DEFINE_integer("max_len", 50, "valid/test prefixes keep their last max_len items")

# Recipe settings: applied only when given on the command line.
_RECIPE = {
    "min_item_count": flags.DEFINE_integer("min_item_count", None, "drop rarer items"),
    "min_session_length": flags.DEFINE_integer("min_session_length", None, "drop shorter sessions"),
    "filter_until_stable": flags.DEFINE_bool(
        "filter_until_stable", None, "repeat filtering until stable"
    ),
    "max_session_length": flags.DEFINE_integer("max_session_length", None, "0 = no cap"),
    "long_sessions": flags.DEFINE_enum(
        "long_sessions", None, ["truncate", "drop"], "what the cap does"
    ),
    "max_sessions": flags.DEFINE_integer("max_sessions", None, "keep the earliest sessions"),
    "test_days": flags.DEFINE_float("test_days", None, "test = sessions of the last days"),
    "drop_boundary_sessions": flags.DEFINE_bool(
        "drop_boundary_sessions", None, "drop sessions ending at the split (SR-GNN)"
    ),
    "train_fraction": flags.DEFINE_float("train_fraction", None, "most recent training fraction"),
    "drop_unseen_test_items": flags.DEFINE_bool(
        "drop_unseen_test_items", None, "remove test items absent from training"
    ),
    "valid_fraction": flags.DEFINE_float("valid_fraction", None, "held-out training sessions"),
    "seed": flags.DEFINE_integer("seed", None, "validation sampling seed"),
}
# Reader settings.
_READER = {
    "gap_minutes": flags.DEFINE_float("gap_minutes", None, "retailrocket: session gap"),
    "events": flags.DEFINE_list("events", None, "retailrocket: event types to keep"),
    "actions": flags.DEFINE_list("actions", None, "tmall: action types to keep (0 click, ...)"),
    "session_field": flags.DEFINE_string("session_field", None, "generic: session/user column"),
    "item_field": flags.DEFINE_string("item_field", None, "generic: item column"),
    "time_field": flags.DEFINE_string("time_field", None, "generic: time column"),
    "time_format": flags.DEFINE_enum(
        "time_format", None, ["seconds", "ms", "iso"], "generic: time column format"
    ),
    "delimiter": flags.DEFINE_string("delimiter", None, "generic: field delimiter"),
    "encoding": flags.DEFINE_string(
        "encoding",
        None,
        "generic, .inter: text encoding of the file " "(default UTF-8; e.g. latin-1)",
    ),
    "structure": flags.DEFINE_float(
        "structure",
        None,
        "synthetic-*: share of followed clicks " "through the item's group (0 = unstructured)",
    ),
    "num_groups": flags.DEFINE_integer("num_groups", None, "synthetic-*: latent item groups"),
    "data_seed": flags.DEFINE_integer("data_seed", None, "synthetic-*: seed of the catalog"),
    "strict": flags.DEFINE_bool(
        "strict",
        None,
        "refuse a raw file whose last line has no line " "break (cut off?) instead of warning",
    ),
}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  recipe = {k: f.value for k, f in _RECIPE.items() if f.present}
  reader = {k: f.value for k, f in _READER.items() if f.present}
  if "events" in reader:
    reader["events"] = tuple(reader["events"])
  if "actions" in reader:
    reader["actions"] = tuple(int(a) for a in reader["actions"])
  if _DATASET.value == "pickle":
    if not (_INPUT.value and _TEST_INPUT.value and _OUTPUT.value):
      raise app.UsageError("--dataset=pickle needs --input, --test_input and --output")
    ds = data.from_pickles(
        _INPUT.value,
        _TEST_INPUT.value,
        max_len=_MAX_LEN.value,
        **{k: v for k, v in recipe.items() if k in ("valid_fraction", "seed")},
    )
    data.check_replace(_OUTPUT.value, ds.manifest, overwrite=_OVERWRITE.value)
    data.save(ds, _OUTPUT.value)
    out = _OUTPUT.value
  else:
    ds, out = data.prepare(
        _DATASET.value,
        protocol=_PROTOCOL.value,
        max_len=_MAX_LEN.value,
        data_dir=_DATA_DIR.value,
        raw=_INPUT.value,
        output=_OUTPUT.value,
        rebuild=_REBUILD.value,
        reader_options=reader,
        overwrite=_OVERWRITE.value,
        **recipe,
    )
  print(data.statistics_table([ds]))
  print(f"\nprepared: {out}")


if __name__ == "__main__":
  _errors.run(main)
