"""Named datasets and `load_dataset`: raw file -> recipe -> protocol -> cached prepared copy.

A prepared copy lives in $CCREC_DATA_DIR/processed/<name>-<protocol>-<key>/, where
<key> hashes the recipe and reader options, so copies made with different
recipes coexist and a cached copy is reused only for the same recipe. An
explicit `output` directory is never silently replaced by a different dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, Callable

from ccrec.data import dataset as dataset_lib
from ccrec.data import protocols, readers, sources, synthetic_catalogs
from ccrec.data.dataset import SessionDataset
from ccrec.data.errors import DataError
from ccrec.data.recipes import ClickLog, Recipe

# SR-GNN's preprocess.py filters once (sessions, items, sessions) and drops the
# sessions that end exactly at the split date; its published statistics need both.
_SRGNN = Recipe(protocol="session", filter_until_stable=False, drop_boundary_sessions=True)


@dataclasses.dataclass(frozen=True)
class Spec:
  reader: Callable[..., ClickLog]
  recipe: Recipe
  file: str  # the raw file's usual name
  origin: str  # where a user gets it


DATASETS: dict[str, Spec] = {
    "ml-100k": Spec(
        readers.read_inter,
        Recipe(protocol="loo", min_item_count=0, min_session_length=3),
        "ml-100k.inter",
        "fetched automatically (GroupLens archive, else the recbole==1.2.1 wheel)",
    ),
    "diginetica": Spec(
        readers.read_diginetica,
        _SRGNN.replace(test_days=7),
        "train-item-views.csv",
        "CIKM Cup 2016 Track 2, https://competitions.codalab.org/competitions/11161",
    ),
    "yoochoose": Spec(
        readers.read_yoochoose,
        _SRGNN.replace(test_days=1),
        "yoochoose-clicks.dat",
        "RecSys Challenge 2015, http://2015.recsyschallenge.com/challenge.html "
        "(yoochoose-data.7z)",
    ),
    "yoochoose1_4": Spec(
        readers.read_yoochoose,
        _SRGNN.replace(test_days=1, train_fraction=0.25),
        "yoochoose-clicks.dat",
        "as yoochoose",
    ),
    "yoochoose1_64": Spec(
        readers.read_yoochoose,
        _SRGNN.replace(test_days=1, train_fraction=1 / 64),
        "yoochoose-clicks.dat",
        "as yoochoose",
    ),
    "retailrocket": Spec(
        readers.read_retailrocket,
        Recipe(protocol="session", test_days=7),
        "events.csv",
        "Kaggle, https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset",
    ),
    "tmall": Spec(
        readers.read_tmall,
        Recipe(
            protocol="session",
            test_days=1,
            max_session_length=40,
            long_sessions="drop",
            max_sessions=120_000,
        ),
        "user_log_format1.csv",
        "IJCAI-15 repeat buyers (Tianchi), https://tianchi.aliyun.com/dataset/42",
    ),
    "generic": Spec(
        readers.read_generic,
        Recipe(protocol="session"),
        "<your file>",
        "any CSV/TSV with session, item and time columns",
    ),
}

_FILE_FORMATS = {
    "train-item-views.csv": "diginetica",
    "yoochoose-clicks.dat": "yoochoose",
    "events.csv": "retailrocket",
    "user_log_format1.csv": "tmall",
}


def _spec_for_file(path: str) -> tuple[str, Spec]:
  base = os.path.basename(path)
  for suffix in (".gz",):
    base = base[: -len(suffix)] if base.endswith(suffix) else base
  if base in _FILE_FORMATS:
    return _FILE_FORMATS[base], DATASETS[_FILE_FORMATS[base]]
  if base.endswith(".inter"):
    return base[: -len(".inter")], Spec(
        readers.read_inter, Recipe(protocol="loo", min_item_count=0, min_session_length=3), base, ""
    )
  if base == "u.data":
    return "u.data", Spec(readers.read_udata, DATASETS["ml-100k"].recipe, base, "")
  return os.path.splitext(base)[0], DATASETS["generic"]


def _resolve(name_or_path: str) -> tuple[str, Spec, str | None]:
  """(name, spec, raw file path or None)."""
  if name_or_path in DATASETS:
    return name_or_path, DATASETS[name_or_path], None
  if os.path.isfile(name_or_path):
    name, spec = _spec_for_file(name_or_path)
    return name, spec, name_or_path
  raise DataError(
      f"unknown dataset {name_or_path!r}: not a prepared directory, not a file, and "
      f"not one of {sorted(DATASETS)}"
  )


def cache_key(name: str, recipe: Recipe, reader_options: dict) -> str:
  text = json.dumps(
      {
          "name": name,
          "recipe": recipe.to_dict(),
          "reader": reader_options,
          "format": dataset_lib.FORMAT_VERSION,
      },
      sort_keys=True,
      default=str,
  )
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _matches(directory, recipe: Recipe, reader_options: dict, raw: str | None) -> bool:
  try:
    manifest = dataset_lib.read_manifest(directory)
  except DataError:
    return False
  if manifest.get("recipe") != recipe.to_dict():
    return False
  if json.loads(json.dumps(reader_options, default=str)) != manifest.get("reader_options", {}):
    return False
  if raw is not None:  # the same file, unchanged (size and path; hashing big logs is slow)
    src = manifest.get("sources", [{}])[0]
    return src.get("path") == os.path.abspath(raw) and src.get("size") == os.path.getsize(raw)
  return True


def prepare(
    name_or_dir: str | os.PathLike,
    *,
    protocol: str | None = None,
    max_len: int | None = 50,
    data_dir: str | os.PathLike | None = None,
    raw: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    rebuild: bool = False,
    reader_options: dict | None = None,
    overwrite: bool = False,
    **recipe: Any,
) -> tuple[SessionDataset, pathlib.Path]:
  """Like `load_dataset`, also returning the prepared directory.

  `output` (default: in the cache) must not hold a prepared dataset of other
  data, recipe or reader options unless `overwrite`.
  """
  name_or_dir = os.fspath(name_or_dir)
  if name_or_dir in synthetic_catalogs.PRESETS:
    return _prepare_synthetic(
        name_or_dir,
        protocol,
        max_len,
        data_dir,
        output,
        rebuild,
        dict(reader_options or {}),
        overwrite,
        recipe,
    )
  if os.path.isdir(name_or_dir):
    if dataset_lib.is_prepared(name_or_dir):
      return dataset_lib.load(name_or_dir), pathlib.Path(name_or_dir)
    raise DataError(
        f"{name_or_dir}: a directory without a prepared dataset "
        f"({dataset_lib.ARRAYS_FILE} + {dataset_lib.MANIFEST_FILE})"
    )
  name, spec, path = _resolve(name_or_dir)
  raw = os.fspath(raw) if raw is not None else path
  overrides = dict(recipe, max_len=max_len)
  if protocol is not None:
    overrides["protocol"] = protocol
  rec = spec.recipe.replace(**overrides)
  reader_options = dict(reader_options or {})
  key = cache_key(name, rec, reader_options)
  out = (
      pathlib.Path(output)
      if output is not None
      else (sources.data_dir(data_dir) / "processed" / f"{name}-{rec.protocol}-{key}")
  )
  check_raw = raw if name != "ml-100k" else None  # ml-100k is identified by its checksum
  if not rebuild and dataset_lib.is_prepared(out) and _matches(out, rec, reader_options, check_raw):
    return dataset_lib.load(out), out
  if name == "ml-100k":
    raw = os.fspath(sources.ml100k_inter(raw, cache=data_dir))
  elif raw is None:
    raise DataError(
        f"dataset {name!r} is not prepared in {out.parent} and must be downloaded by "
        f"hand: get {spec.file} from {spec.origin}, then pass raw=/path/to/{spec.file} "
        f"(launch/prepare_data.py --input)"
    )
  options = json.loads(json.dumps(reader_options, default=str))
  if output is not None and not overwrite and dataset_lib.is_prepared(out):
    source = {"path": os.path.abspath(raw), "sha256": readers.sha256_file(raw)}
    dataset_lib.check_replace(
        out, {"name": name, "recipe": rec.to_dict(), "reader_options": options, "sources": [source]}
    )
  try:
    log = spec.reader(raw, **reader_options)
  except TypeError as e:
    raise DataError(f"dataset {name!r}: bad reader options {reader_options}: {e}") from None
  build = {"loo": protocols.loo, "session": protocols.session}[rec.protocol]
  ds = build(log, rec, name)
  ds.manifest.update(reader_options=options, cache_key=key)
  dataset_lib.save(ds, out)
  return ds, out


def _prepare_synthetic(
    name: str,
    protocol,
    max_len,
    data_dir,
    output,
    rebuild: bool,
    options: dict,
    overwrite: bool,
    recipe: dict,
) -> tuple[SessionDataset, pathlib.Path]:
  """`prepare` for a generated catalog: reader_options are its CatalogSpec overrides."""
  unknown = sorted(set(recipe) - set(synthetic_catalogs.RECIPE_FIELDS))
  if unknown:
    raise DataError(
        f"dataset {name!r} is generated, not filtered from a raw log: recipe "
        f"setting(s) {unknown} do not apply (it takes "
        f"{list(synthetic_catalogs.RECIPE_FIELDS)}; its own settings are reader "
        f"options: {sorted(synthetic_catalogs.CatalogSpec.__dataclass_fields__)})"
    )
  if protocol not in (None, "session"):
    raise DataError(f"dataset {name!r} is generated in protocol 'session', got {protocol!r}")
  rec = synthetic_catalogs.RECIPE.replace(**recipe, max_len=max_len)
  spec = synthetic_catalogs.spec_for(name, options)
  options = json.loads(json.dumps(options, default=str))
  key = cache_key(name, rec, {**options, "generator": synthetic_catalogs.GENERATOR_VERSION})
  out = (
      pathlib.Path(output)
      if output is not None
      else (sources.data_dir(data_dir) / "processed" / f"{name}-{rec.protocol}-{key}")
  )
  if not rebuild and dataset_lib.is_prepared(out) and _matches(out, rec, options, None):
    manifest = dataset_lib.read_manifest(out)
    if (
        manifest.get("synthetic") == spec.to_dict()
        and manifest.get("generator") == synthetic_catalogs.GENERATOR_VERSION
    ):
      return dataset_lib.load(out), out
  ds = synthetic_catalogs.build(name, spec, rec)
  ds.manifest.update(reader_options=options, cache_key=key)
  if output is not None:
    dataset_lib.check_replace(out, ds.manifest, overwrite=overwrite)
  dataset_lib.save(ds, out)
  return ds, out


def load_dataset(
    name_or_dir: str | os.PathLike,
    *,
    protocol: str | None = None,
    max_len: int | None = 50,
    data_dir: str | os.PathLike | None = None,
    raw: str | os.PathLike | None = None,
    rebuild: bool = False,
    reader_options: dict | None = None,
    **recipe: Any,
) -> SessionDataset:
  """A SessionDataset by name, raw file path or prepared directory.

  Args:
    name_or_dir: a name in DATASETS ('ml-100k', 'diginetica', ...), a raw file
      (format from its name: *.inter, u.data, train-item-views.csv, ...), or a
      directory holding a prepared dataset (loaded as is; recipe args ignored).
    protocol: 'loo' or 'session'; None = the dataset's default.
    max_len: valid/test prefixes keep their last max_len items (None = all).
    data_dir: cache root; default $CCREC_DATA_DIR or ~/.cache/ccrec.
    raw: the raw file (ml-100k: optional local copy; others: required until prepared).
    rebuild: prepare again even if a cached copy matches.
    reader_options: keyword arguments of the reader (e.g. gap_minutes for
      RetailRocket; session_field/item_field/time_field for generic files).
    **recipe: Recipe overrides (min_item_count=..., test_days=..., ...).
  """
  return prepare(
      name_or_dir,
      protocol=protocol,
      max_len=max_len,
      data_dir=data_dir,
      raw=raw,
      rebuild=rebuild,
      reader_options=reader_options,
      **recipe,
  )[0]
