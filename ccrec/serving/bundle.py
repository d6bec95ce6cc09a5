"""The on-device bundle format: a directory of .npy arrays and a JSON manifest.

Numpy only (the runtime imports this module). Layout:

  BUNDLE/manifest.json     format_version, kind, config, arrays (file, shape,
                           dtype, sha256, bytes of each), manifest_sha256, item ids,
                           metrics, sizes, created
  BUNDLE/<name>.npy        one array per file ('/' in the name -> '.'), saved
                           and loaded with allow_pickle=False

Kinds (manifest["kind"]) and their item arrays (config = manifest["config"]):

  codes   items/codes      uint8|uint16 [M, V+1]  codebook-major (each codebook's
                                                  codes contiguous); column 0 = padding
          items/codebooks  float32 [M, K, d], or int8 [M, K, d] with
          items/codebook_scale float32 [M, K]     (codeword = scale * int8 row)
  table   items/embedding  float32 [V+1, d]       (row 0 padding, zero)
  tt      items/core_k     float32 [r_{k-1}, n_k, d_k, r_k], k = 0..K-1

Every kind also holds the encoder and readout weights under their Flax names
(encoder/position/embedding, encoder/block_0/query/kernel, encoder/gru_0/ir/kernel,
readout/w1/bias, ...)
and optionally meta/popular_items int32 [P] (training popularity order, for the
empty-session fallback) and meta/raw_item_ids unicode [V+1] (raw id of each
dense id; entry 0 is '' for padding). The names, shapes and dtypes are the
model's: `ccrec.serving.export` derives them from the Flax model at export and
checks the arrays against them; the manifest's `arrays` entries record them.

`write_bundle` writes the arrays first and the manifest last (through a
temporary name), so a directory without manifest.json is an unfinished export.
Arrays are bool, integer, float (finite: no NaN or Inf) or unicode.
`read_bundle` validates: format version, kind, every config field
(`manifest.check_config`), every manifest array entry, the checksum sealing those
model fields (`manifest.check_sealed`), every file (present, not truncated, sha256,
a readable .npy of the recorded shape and dtype, floats finite) and raises BundleError
naming the bundle and the field, file or array at fault.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from typing import Any

import numpy as np

from ccrec import atomic
from ccrec.serving.manifest import (
    CHECKSUM_FIELD,
    FORMAT_VERSION,
    KINDS,
    MODEL_FIELDS,
    REEXPORT,
    BundleError,
    check_config,
    check_sealed,
    manifest_sha256,
)

MANIFEST_FILE = "manifest.json"
ARRAY_KINDS = "biufU"  # numpy dtype kinds a bundle array may have


# ---------------------------------------------------------------------------- names


def array_file(name: str) -> str:
  """'encoder/block_0/query/kernel' -> 'encoder.block_0.query.kernel.npy'."""
  return name.replace("/", ".") + ".npy"


def check_finite(a: np.ndarray, where: str) -> None:
  """Raises BundleError naming `where` if float array `a` holds NaN or Inf."""
  if a.dtype.kind == "f":
    bad = a.size - int(np.isfinite(a).sum())
    if bad:
      raise BundleError(f"{where} holds {bad} non-finite value(s) (NaN or Inf) of {a.size}")


# ---------------------------------------------------------------------------- writing


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def write_bundle(
    directory: str,
    arrays: dict[str, np.ndarray],
    *,
    kind: str,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict:
  """Writes a bundle and returns its manifest.

  Args:
    directory: created if missing; if it already holds a manifest, `overwrite`
      must be True (stale .npy files of a previous bundle are removed).
    arrays: name -> array: the model's arrays (`ccrec.serving.export.bundle_layout`,
      checked there) plus optional meta/* arrays.
    kind: 'codes' | 'table' | 'tt' (must equal config['embedding']).
    config: the model config subset (see `check_config`).
    metrics: recorded as manifest['metrics'] (e.g. test metrics at export).
    extra: further JSON-able manifest fields (source workdir, dataset, sizes, ...).
  """
  config = dict(config)
  if config.get("embedding") != kind:
    raise BundleError(f"kind {kind!r} differs from config.embedding {config.get('embedding')!r}")
  check_config(config, directory)
  arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
  for name, a in arrays.items():
    if a.dtype.kind not in ARRAY_KINDS:
      raise BundleError(
          f"cannot export {directory}: array {name} has dtype {a.dtype}; bundles "
          "hold bool, integer, float and unicode arrays only"
      )
    check_finite(a, f"cannot export {directory}: array {name}")
  manifest_path = os.path.join(directory, MANIFEST_FILE)
  if os.path.exists(manifest_path):
    if not overwrite:
      raise BundleError(f"{directory} already holds a bundle; pass overwrite=True to replace it")
    os.remove(manifest_path)
    for name in os.listdir(directory):
      if name.endswith(".npy"):
        os.remove(os.path.join(directory, name))
  os.makedirs(directory, exist_ok=True)
  entries = {}
  for name, a in sorted(arrays.items()):
    path = os.path.join(directory, array_file(name))
    np.save(path, a, allow_pickle=False)
    entries[name] = {
        "file": array_file(name),
        "shape": list(a.shape),
        "dtype": a.dtype.str,
        "bytes": os.path.getsize(path),
        "sha256": _sha256(path),
    }
  manifest = {
      "format_version": FORMAT_VERSION,
      "kind": kind,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "config": config,
      "arrays": entries,
      "metrics": dict(metrics or {}),
  }
  manifest.update(extra or {})
  manifest[CHECKSUM_FIELD] = manifest_sha256(manifest)
  atomic.write_json(manifest_path, manifest)
  return manifest


def update_manifest(directory: str, fields: dict[str, Any]) -> dict:
  """Adds or replaces top-level manifest fields other than the sealed ones."""
  protected = {*MODEL_FIELDS, CHECKSUM_FIELD} & set(fields)
  if protected:
    raise BundleError(f"update_manifest cannot change {sorted(protected)}")
  path = os.path.join(directory, MANIFEST_FILE)
  manifest = read_manifest(directory)
  manifest.update(fields)
  atomic.write_json(path, manifest)
  return manifest


# ---------------------------------------------------------------------------- reading


def read_manifest(directory: str) -> dict:
  """Reads and checks manifest.json: version, kind, config, array entries, checksum."""
  path = os.path.join(directory, MANIFEST_FILE)
  if not os.path.isdir(directory):
    raise BundleError(f"bundle {directory} does not exist (or is not a directory)")
  if not os.path.exists(path):
    raise BundleError(
        f"{path} not found: {directory} is not a bundle, or its export did " "not finish"
    )
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise BundleError(f"{path} is not valid JSON: {e}") from e
  if not isinstance(manifest, dict):
    raise BundleError(f"{path}: expected a JSON object")
  version = manifest.get("format_version")
  if version != FORMAT_VERSION:
    raise BundleError(
        f"{path}: format_version {version!r} is not supported; this runtime "
        f"reads format_version {FORMAT_VERSION} ({REEXPORT})"
    )
  for key in ("kind", "config", "arrays"):
    if key not in manifest:
      raise BundleError(f"{path}: field {key!r} is missing")
  if manifest["kind"] not in KINDS:
    raise BundleError(f"{path}: kind must be one of {KINDS}, got {manifest['kind']!r}")
  config = manifest["config"]
  if not isinstance(config, dict) or config.get("embedding") != manifest["kind"]:
    raise BundleError(f"{path}: config.embedding does not match kind {manifest['kind']!r}")
  check_config(config, path)
  entries = manifest["arrays"]
  if not isinstance(entries, dict):
    raise BundleError(f"{path}: field 'arrays' must be a JSON object, got {entries!r}")
  for name, entry in entries.items():
    _check_entry(entry, f"{path}: array {name}")
  check_sealed(manifest, path)
  return manifest


def _is_count(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_entry(entry: Any, where: str) -> None:
  """Raises BundleError naming `where` and the field if a manifest array entry is malformed."""
  if not isinstance(entry, dict):
    raise BundleError(f"{where}: expected a JSON object, got {entry!r}")
  for key in ("file", "shape", "dtype", "sha256", "bytes"):
    if key not in entry:
      raise BundleError(f"{where} lacks field {key!r}")
  file, shape, dtype, sha = entry["file"], entry["shape"], entry["dtype"], entry["sha256"]
  if not isinstance(file, str) or os.path.basename(file) != file or not file.endswith(".npy"):
    raise BundleError(f"{where}: field 'file' is a bad file name {file!r}")
  if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
    raise BundleError(f"{where}: field 'shape' must be a list of non-negative ints, got {shape!r}")
  try:
    kind = np.dtype(dtype).kind if isinstance(dtype, str) else None
  except (TypeError, ValueError):
    kind = None
  if kind is None or kind not in ARRAY_KINDS:
    raise BundleError(
        f"{where}: field 'dtype' must name a numpy bool, integer, float or "
        f"unicode dtype (e.g. '<f4'), got {dtype!r}"
    )
  if not isinstance(sha, str) or not re.fullmatch("[0-9a-f]{64}", sha):
    raise BundleError(f"{where}: field 'sha256' must be 64 lowercase hex digits, got {sha!r}")
  if not _is_count(entry["bytes"]):
    raise BundleError(f"{where}: field 'bytes' must be a non-negative int, got {entry['bytes']!r}")


def _load_array(directory: str, name: str, entry: dict, verify: bool, mmap: bool) -> np.ndarray:
  path = os.path.join(directory, entry["file"])
  if not os.path.exists(path):
    raise BundleError(f"bundle {directory}: file {entry['file']} of array {name} is missing")
  size = os.path.getsize(path)
  if size != entry["bytes"]:
    what = "truncated" if size < entry["bytes"] else "larger than recorded"
    raise BundleError(
        f"bundle {directory}: file {entry['file']} of array {name} is {what} "
        f"({size} bytes, the manifest says {entry['bytes']})"
    )
  if verify and _sha256(path) != entry["sha256"]:
    raise BundleError(
        f"bundle {directory}: checksum mismatch for file {entry['file']} "
        f"(array {name}): the file {entry['file']} or its manifest entry "
        f"(arrays[{name!r}].sha256 in {MANIFEST_FILE}) was changed after export"
    )
  try:
    a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
  except Exception as e:  # a damaged header raises ValueError, SyntaxError, TokenError, ...
    raise BundleError(
        f"bundle {directory}: file {entry['file']} of array {name} cannot be " f"read as .npy: {e}"
    ) from e
  if list(a.shape) != list(entry["shape"]) or a.dtype != np.dtype(entry["dtype"]):
    raise BundleError(
        f"bundle {directory}: file {entry['file']} holds {a.dtype.str} "
        f"{list(a.shape)}, the manifest says array {name} is {entry['dtype']} "
        f"{entry['shape']}"
    )
  if verify or not mmap:  # an unverified mmap reads no data here; the runtime checks scores
    check_finite(a, f"bundle {directory}: file {entry['file']} of array {name}")
  return a


def read_bundle(
    directory: str, *, verify: bool = True, mmap: bool = False
) -> tuple[dict, dict[str, np.ndarray]]:
  """Validates and loads a bundle: (manifest, name -> array).

  Args:
    verify: check every file's sha256 (reads each file twice; turn off only for
      bundles verified before, e.g. at install time).
    mmap: memory-map the arrays read-only instead of reading them into memory
      (with verify=False no data is read, so float arrays are not checked finite).
  """
  manifest = read_manifest(directory)
  arrays = {
      name: _load_array(directory, name, entry, verify, mmap)
      for name, entry in manifest["arrays"].items()
  }
  return manifest, arrays


def bundle_bytes(directory: str) -> int:
  """Bytes on disk of a bundle's files (manifest + arrays)."""
  return sum(
      os.path.getsize(os.path.join(directory, f))
      for f in os.listdir(directory)
      if os.path.isfile(os.path.join(directory, f))
  )
