"""Checkpoints: the only module of ccrec that imports orbax.

A stage's directory keeps two orbax CheckpointManagers, `latest/` (resume) and
`best/` (best on validation, what evaluation restores), each with one step.
Each checkpoint holds the state pytree and a JSON `meta` dict (epoch, early
stopping counters, metrics), so a resumed run continues exactly where the
last completed epoch left it.

Integrity: the meta also holds a checksum of the state's arrays (reduced on device, so
sharded and multi-host states are covered without gathering them), checked after every
restore, so a checkpoint whose files changed after it was written (a flipped byte that
still decodes) is an error, not silently different weights. A second checksum covers the
meta itself (its file is plain JSON, where a flipped bit renames a key or changes a
number). Before restoring, the stored shapes and dtypes are compared with the model's, so a
checkpoint of another model or dataset is refused naming the array, before orbax reads
anything. A checkpoint that cannot be read is an error naming the damaged file and the
cause, and what to delete to train the stage again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

_DIGEST = "_state_checksum"  # meta key of the state's checksum (absent in older checkpoints)
_META_DIGEST = "_meta_checksum"  # meta key of the meta's own checksum (absent in older ones)


def _leaf_words(x: jax.Array) -> jax.Array:
  """A leaf's bits as uint32 words (flattened), whatever its dtype."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).ravel()
  size = jnp.dtype(x.dtype).itemsize
  if size < 4:
    unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()
  return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()  # 8-byte types: 2 words each


@jax.jit
def _leaf_sums(leaves: list) -> jax.Array:
  """uint32 [L, 2] per leaf: sum of words x odd position weights, and of words (mod 2^32).

  Computed where the arrays live (sharded or multi-host arrays reduce in place; only 8
  bytes per leaf reach the host). Any single changed bit changes the weighted sum, since
  (+-2^b) x (odd weight) is never 0 mod 2^32.
  """
  out = []
  for x in leaves:
    w = _leaf_words(x)
    weights = jnp.arange(w.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    out.append(jnp.stack([jnp.sum(w * weights, dtype=jnp.uint32), jnp.sum(w, dtype=jnp.uint32)]))
  return jnp.stack(out) if out else jnp.zeros((0, 2), jnp.uint32)


def state_digest(state: Any) -> str:
  """A checksum of every array of `state` (values, shapes, dtypes) in tree order, as hex.

  Meant to catch damaged files, not tampering: per-leaf position-weighted sums of the
  bits, reduced on device, then sha256 of those sums with the shapes and dtypes.
  """
  leaves = [jnp.asarray(x) if not isinstance(x, jax.Array) else x for x in jax.tree.leaves(state)]
  sums = np.asarray(jax.device_get(_leaf_sums(leaves)))
  h = hashlib.sha256(sums.astype("<u4").tobytes())
  for x in leaves:
    h.update(f"{x.dtype}{tuple(x.shape)};".encode())
  return h.hexdigest()


def meta_digest(meta: dict) -> str:
  """sha256 of `meta` (without its own checksum) as JSON, as it reads back from its file."""
  body = json.loads(json.dumps({k: v for k, v in meta.items() if k != _META_DIGEST}))
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


_SPEC = re.compile(r"(\s*\[tensorstore_spec|\.?\s*See full TensorStore details).*", re.DOTALL)
_LOCAL_FILE = re.compile(r'local file "([^"]+)"')
_LOCAL_FILE_COLON = re.compile(r'local file "[^"]+": ')
_ARRAY = re.compile(r"'path': '([^'/][^']*?)/?'")  # an array's path in a tensorstore spec


def _cause(error: BaseException, step_dir: str) -> tuple[str, str]:
  """(the damaged file, else the state's directory; a one-line cause) of a restore error.

  Tensorstore's messages carry kilobytes of spec; the file it names and its first
  sentence are what a reader needs.
  """
  for name in ("meta/metadata", "state/_METADATA", "state/array_metadatas/*"):
    for path in sorted(glob.glob(os.path.join(step_dir, name))):
      try:
        with open(path, "rb") as f:
          json.loads(f.read().decode("utf-8"))
      except (ValueError, OSError, RecursionError) as e:  # bad UTF-8, bad JSON, deep nesting
        return path, f"not valid JSON ({type(e).__name__}: {e})"
  chain, seen = [], error
  while seen is not None and len(chain) < 8:
    chain.append(seen)
    seen = seen.__cause__ or seen.__context__
  texts = [str(e) for e in chain]
  files = [f for t in texts for f in _LOCAL_FILE.findall(t) if not f.endswith("/")]
  array = next((m.group(1) for t in texts for m in [_ARRAY.search(t)] if m), None)
  innermost = chain[-1]
  text = _SPEC.sub("", str(innermost)).strip()
  named = list(_LOCAL_FILE_COLON.finditer(text))
  text = text[named[-1].end() :] if named else text  # what went wrong in the last file named
  cause = f"{type(innermost).__name__}: {(text.splitlines() or [''])[0]}"[:300]
  if array and not files:
    cause = f"array {array}: {cause}"
  return (files[-1] if files else os.path.join(step_dir, "state")), cause


def _key_name(entry: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """{path: (shape, dtype)} with paths spelled the same for dicts, dataclasses and tuples."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
      continue  # stored as key data; orbax checks these itself
    out["/".join(_key_name(e) for e in path)] = (tuple(getattr(leaf, "shape", ())), str(dtype))
  return out


class CheckpointError(RuntimeError):
  """A checkpoint is missing, corrupt or does not match the model."""


class Checkpointer:
  """Latest + best checkpoints of one training stage under `directory`."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=False
    )
    self._managers = {
        name: ocp.CheckpointManager(os.path.join(self.directory, name), options=options)
        for name in ("latest", "best")
    }

  def latest_step(self, which: str = "latest") -> int | None:
    return self._managers[which].latest_step()

  def save(self, step: int, state: Any, meta: dict, *, best: bool = False) -> None:
    """Saves `state` as the latest checkpoint (and as the best one if `best`)."""
    meta = {**meta, _DIGEST: state_digest(state)}
    meta[_META_DIGEST] = meta_digest(meta)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    for name in ("latest", "best") if best else ("latest",):
      manager = self._managers[name]
      manager.save(int(step), args=args, force=True)
      manager.wait_until_finished()

  def restore(
      self, abstract_state: Any, which: str = "latest", *, meta_keys: Iterable[str] | None = None
  ) -> tuple[Any, dict] | None:
    """Restores into the structure of `abstract_state`; None if there is no checkpoint.

    meta_keys: if given, the keys the saved meta holds; a missing or unknown key is
      damage (this also covers checkpoints written without a meta checksum).
    """
    manager = self._managers[which]
    step = manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    step_dir = os.path.join(self.directory, which, str(step))
    where = f"the {which} checkpoint at step {step} in {os.path.join(self.directory, which)}"
    fix = f"Restore it from a copy, or delete {self.directory} to train this stage again."
    self._check_shapes(where, os.path.join(step_dir, "state"), abstract)
    try:
      restored = manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
          ),
      )
    except Exception as e:  # orbax raises many types for corrupt or mismatched files.
      path, cause = _cause(e, step_dir)
      raise CheckpointError(
          f"cannot restore {where}: {path}: {cause}. The checkpoint is "
          f"damaged or was written by a different model/dataset (item count, sizes). {fix}"
      ) from e
    meta_file = os.path.join(step_dir, "meta", "metadata")
    if not isinstance(restored.meta, dict):
      raise CheckpointError(
          f"{meta_file} is damaged: it holds {type(restored.meta).__name__}, "
          f"not a JSON object ({where}). {fix}"
      )
    meta = dict(restored.meta)
    meta_want = meta.pop(_META_DIGEST, None)
    if meta_want is not None and meta_digest(meta) != meta_want:
      raise CheckpointError(
          f"{meta_file} fails its checksum: the meta of {where} was changed "
          f"or damaged after it was saved. {fix}"
      )
    if meta_keys is not None:
      missing = sorted(set(meta_keys) - set(meta))
      unknown = sorted(set(meta) - set(meta_keys) - {_DIGEST})
      if missing or unknown:
        what = "; ".join(
            ([f"it lacks {missing}"] if missing else [])
            + ([f"it holds unknown keys {unknown}"] if unknown else [])
        )
        raise CheckpointError(f"{meta_file} is damaged: {what} ({where}). {fix}")
    want = meta.pop(_DIGEST, None)
    if want is not None:
      got = state_digest(restored.state)
      if got != want:
        raise CheckpointError(
            f"{where} fails its checksum (of the restored arrays {got[:12]}... vs "
            f"{want[:12]}... when written): its files were changed or damaged after it was "
            f"saved. {fix}"
        )
    return restored.state, meta

  @staticmethod
  def _check_shapes(where: str, state_dir: str, abstract: Any) -> None:
    """Raises CheckpointError naming arrays whose stored shape/dtype differ from the model's."""
    try:
      stored = ocp.StandardCheckpointHandler().metadata(epath.Path(state_dir))
    except Exception:  # unreadable metadata: restore() reports the corruption itself
      return
    have, want = _shapes(stored), _shapes(abstract)
    if set(have) != set(want):
      return  # structures spelled differently: leave the comparison to orbax
    bad = [
        f"{k}: stored {have[k][0]} {have[k][1]}, model {want[k][0]} {want[k][1]}"
        for k in sorted(want, key=lambda k: ("params" not in k.split("/"), k))
        if have[k] != want[k]
    ]
    if bad:
      raise CheckpointError(
          f"{where} does not fit this model: {'; '.join(bad[:4])}"
          f"{f' (and {len(bad) - 4} more)' if len(bad) > 4 else ''}. It was written by a "
          "different model or dataset (sizes, item count)."
      )
