"""A bundle manifest's model fields: the config's schema and the checksum that seals them.

The fields the runtime computes with, `MODEL_FIELDS` (format_version, kind, config and
the arrays' entries), are sealed at export by `manifest_sha256`: the sha256 of their
canonical JSON (sorted keys, no spaces, ASCII), stored in the manifest under the same
name. A changed byte in any of them (a layer-norm epsilon of 1e-12 become 1e-02, a
hand-edited num_heads) no longer matches, so the bundle is refused instead of silently
recommending other items. The other fields (metrics, sizes, verification, source,
created) are informational and not sealed.

`check_config` validates every config field's type and range, naming the field. The
config's `encoder` names the session encoder (one of ENCODERS; a config without the field
is the transformer's) and decides which sizes it holds (`_ENCODER_FIELDS`).
Numpy-free: plain Python.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

FORMAT_VERSION = 2  # 2: the model fields are sealed by manifest_sha256
KINDS = ("codes", "table", "tt")
ENCODERS = ("transformer", "gru4rec", "narm")  # the encoders the runtime computes
GRU_ENCODERS = ("gru4rec", "narm")  # the GRU encoder of ccrec/models/gru.py
DEFAULT_ENCODER = "transformer"  # the encoder of a config without the field
READOUTS = ("soft_attention", "last", "narm")
CODEBOOK_DTYPES = ("float32", "int8")
MODEL_FIELDS = ("format_version", "kind", "config", "arrays")
CHECKSUM_FIELD = "manifest_sha256"
REEXPORT = "re-export the bundle with this version of ccrec (launch/export.py)"

# Config fields of every kind, of each encoder, and of each kind's item representation.
_COMMON = ("num_items", "d", "max_len", "readout", "embedding")
_TRANSFORMER = ("num_blocks", "num_heads", "inner", "layer_norm_eps")
_GRU = ("gru_hidden", "gru_layers")
_ENCODER_FIELDS = {"transformer": _TRANSFORMER, "gru4rec": _GRU, "narm": _GRU}
_ITEMS = {"codes": ("num_codebooks", "codebook_size", "codebook_dtype"), "table": (), "tt": ("tt",)}
_TT = ("item_factors", "d_factors", "ranks")


class BundleError(ValueError):
  """A bundle is missing, of another format version, inconsistent or corrupted."""


def manifest_sha256(manifest: dict[str, Any]) -> str:
  """sha256 (hex) of the canonical JSON of the manifest's MODEL_FIELDS."""
  sealed = {k: manifest.get(k) for k in MODEL_FIELDS}
  text = json.dumps(
      sealed, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
  )
  return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_sealed(manifest: dict[str, Any], where: str) -> None:
  """Raises BundleError unless the manifest's checksum matches its model fields."""
  stored = manifest.get(CHECKSUM_FIELD)
  if stored is None:
    raise BundleError(
        f"{where}: field {CHECKSUM_FIELD!r} is missing: the bundle was written "
        f"by an earlier ccrec and its model fields cannot be checked; {REEXPORT}"
    )
  try:
    actual = manifest_sha256(manifest)
  except ValueError as e:  # NaN or Inf in a sealed field: never written by an export
    raise BundleError(f"{where}: the model fields hold a non-JSON number ({e}); {REEXPORT}") from e
  if stored != actual:
    raise BundleError(
        f"{where}: checksum mismatch of the model fields {list(MODEL_FIELDS)}: one of them "
        f"(e.g. config.layer_norm_eps, config.num_heads, an array's shape) was changed after "
        f"export, or {CHECKSUM_FIELD} was; {REEXPORT}"
    )


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _positive_ints(x: Any) -> bool:
  return isinstance(x, list) and bool(x) and all(_is_int(n) and n >= 1 for n in x)


def check_config(config: Any, where: str) -> None:
  """Raises BundleError naming the field unless `config` is a valid bundle config."""
  if not isinstance(config, dict):
    raise BundleError(f"{where}: config must be a JSON object, got {config!r}")
  kind = config.get("embedding")
  if kind not in KINDS:
    raise BundleError(f"{where}: config.embedding must be one of {KINDS}, got {kind!r}")
  encoder = config.get("encoder", DEFAULT_ENCODER)
  if encoder not in ENCODERS:
    raise BundleError(
        f"{where}: config.encoder {encoder!r} is not an encoder this runtime serves "
        f"(one of {ENCODERS})"
    )
  need = _COMMON + _ENCODER_FIELDS[encoder] + _ITEMS[kind]
  missing = [k for k in need if k not in config]
  if missing:
    raise BundleError(f"{where}: config lacks {missing}")
  unknown = sorted(set(config) - set(need) - {"encoder"})
  if unknown:
    raise BundleError(
        f"{where}: config has unknown field(s) {unknown} for encoder {encoder!r} and "
        f"embedding {kind!r}"
    )
  for key in ("num_items", "d", "max_len"):
    _check_positive(config, key, where)
  if config["readout"] not in READOUTS:
    raise BundleError(
        f"{where}: config.readout must be one of {READOUTS}, " f"got {config['readout']!r}"
    )
  if encoder == "transformer":
    _check_transformer(config, where)
  else:
    for key in _GRU:
      _check_positive(config, key, where)
  if kind == "codes":
    _check_codes(config, where)
  elif kind == "tt":
    _check_tt(config, where)


def _check_positive(config: dict[str, Any], key: str, where: str) -> None:
  if not _is_int(config[key]) or config[key] < 1:
    raise BundleError(f"{where}: config.{key} must be a positive integer, got {config[key]!r}")


def _check_transformer(config: dict[str, Any], where: str) -> None:
  for key in ("num_blocks", "num_heads", "inner"):
    _check_positive(config, key, where)
  if config["d"] % config["num_heads"]:
    raise BundleError(
        f"{where}: config.d={config['d']} is not divisible by "
        f"config.num_heads={config['num_heads']}"
    )
  eps = config["layer_norm_eps"]
  if not (
      isinstance(eps, (int, float))
      and not isinstance(eps, bool)
      and math.isfinite(eps)
      and 0 < eps < 1
  ):
    raise BundleError(f"{where}: config.layer_norm_eps must be a number in (0, 1), got {eps!r}")


def _check_codes(config: dict[str, Any], where: str) -> None:
  if not _is_int(config["num_codebooks"]) or config["num_codebooks"] < 1:
    raise BundleError(
        f"{where}: config.num_codebooks must be a positive integer, "
        f"got {config['num_codebooks']!r}"
    )
  if not _is_int(config["codebook_size"]) or not 1 <= config["codebook_size"] <= 65536:
    raise BundleError(
        f"{where}: config.codebook_size must be an integer in [1, 65536], "
        f"got {config['codebook_size']!r}"
    )
  if config["codebook_dtype"] not in CODEBOOK_DTYPES:
    raise BundleError(
        f"{where}: config.codebook_dtype must be one of {CODEBOOK_DTYPES}, "
        f"got {config['codebook_dtype']!r}"
    )


def _check_tt(config: dict[str, Any], where: str) -> None:
  tt = config["tt"]
  if not isinstance(tt, dict) or sorted(tt) != sorted(_TT):
    raise BundleError(f"{where}: config.tt must hold exactly {list(_TT)}, got {tt!r}")
  for key in _TT:
    if not _positive_ints(tt[key]) and not (key == "ranks" and tt[key] == []):
      raise BundleError(
          f"{where}: config.tt.{key} must be a list of positive integers, " f"got {tt[key]!r}"
      )
  if not len(tt["item_factors"]) == len(tt["d_factors"]) == len(tt["ranks"]) + 1:
    raise BundleError(
        f"{where}: config.tt needs K item_factors, K d_factors and K-1 ranks, "
        f"got {len(tt['item_factors'])}, {len(tt['d_factors'])}, "
        f"{len(tt['ranks'])}"
    )
  if math.prod(tt["item_factors"]) < config["num_items"] + 1:
    raise BundleError(
        f"{where}: config.tt.item_factors {tt['item_factors']} cover fewer "
        f"than num_items + 1 = {config['num_items'] + 1} rows"
    )
  if math.prod(tt["d_factors"]) != config["d"]:
    raise BundleError(
        f"{where}: config.tt.d_factors {tt['d_factors']} do not multiply to "
        f"config.d={config['d']}"
    )
