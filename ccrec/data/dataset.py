"""The processed-dataset format: CSR sequences, prefix examples, save and load.

A prepared dataset is a directory with two files:

  data.npz       integer arrays, uncompressed (loading ml-100k takes milliseconds):
                 train_offsets int64, train_items int32, {valid,test}_offsets int64,
                 {valid,test}_items int32, {valid,test}_targets int32, item_counts int64
  manifest.json  name, num_items, recipe, sources (path + sha256), id map
                 (raw item id string -> dense id), statistics

Item ids are 1..num_items; 0 is padding (docs/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
import zlib
from typing import Sequence as TypingSequence

import numpy as np

from ccrec import atomic
from ccrec.data.errors import DataError, at

FORMAT_VERSION = 1
ARRAYS_FILE = "data.npz"
MANIFEST_FILE = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Sequences:
  """Ragged int sequences in CSR form: sequence i is items[offsets[i]:offsets[i+1]]."""

  offsets: np.ndarray  # int64 [N + 1], offsets[0] == 0
  items: np.ndarray  # int32 [offsets[-1]]

  def __post_init__(self):
    offsets = np.asarray(self.offsets, dtype=np.int64)
    items = np.asarray(self.items, dtype=np.int32)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(items):
      raise DataError(f"Sequences: offsets must run from 0 to len(items)={len(items)}")
    object.__setattr__(self, "offsets", offsets)
    object.__setattr__(self, "items", items)

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, i: int) -> np.ndarray:
    """int32 [n_i]: sequence i (a view)."""
    n = len(self)
    if not -n <= i < n:
      raise IndexError(f"sequence {i} out of range for {n} sequences")
    i %= n
    return self.items[self.offsets[i] : self.offsets[i + 1]]

  def lengths(self) -> np.ndarray:
    """int64 [N]."""
    return np.diff(self.offsets)

  def take(self, indices: np.ndarray) -> "Sequences":
    """The sequences at `indices` (int [M]), in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    starts, lens = self.offsets[indices], self.lengths()[indices]
    return Sequences(_offsets(lens), self.items[_ranges(starts, lens)])

  @classmethod
  def from_lists(cls, lists: TypingSequence[TypingSequence[int]]) -> "Sequences":
    lens = np.fromiter((len(s) for s in lists), dtype=np.int64, count=len(lists))
    flat = [x for s in lists for x in s]
    return cls(_offsets(lens), np.asarray(flat, dtype=np.int32))

  def to_lists(self) -> list[list[int]]:
    return [self[i].tolist() for i in range(len(self))]


@dataclasses.dataclass(frozen=True)
class Examples:
  """Prefix -> next item examples: prefixes[i] is followed by targets[i]."""

  prefixes: Sequences
  targets: np.ndarray  # int32 [N]

  def __post_init__(self):
    targets = np.asarray(self.targets, dtype=np.int32)
    if targets.shape != (len(self.prefixes),):
      raise DataError(
          f"Examples: {len(self.prefixes)} prefixes but targets of shape " f"{targets.shape}"
      )
    object.__setattr__(self, "targets", targets)

  def __len__(self) -> int:
    return len(self.targets)


@dataclasses.dataclass(frozen=True)
class SessionDataset:
  """A processed dataset: train sequences, valid/test examples, item statistics."""

  name: str
  num_items: int
  train: Sequences  # one of length n gives n - 1 targets
  valid: Examples
  test: Examples
  item_counts: np.ndarray  # int64 [num_items + 1], training frequency, [0] == 0
  manifest: dict

  def train_examples(self, max_len: int | None = None) -> Examples:
    """Prefix augmentation of `train`; prefixes keep their last `max_len` items if given."""
    return prefix_augment(self.train, max_len)

  def statistics(self) -> dict:
    return statistics(self)


def _offsets(lengths: np.ndarray) -> np.ndarray:
  out = np.zeros(len(lengths) + 1, dtype=np.int64)
  np.cumsum(lengths, out=out[1:])
  return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Concatenation of arange(s, s + n) for each (s, n), vectorised: int64 [sum(n)]."""
  lengths = np.asarray(lengths, dtype=np.int64)
  total = int(lengths.sum())
  if total == 0:
    return np.zeros(0, dtype=np.int64)
  keep = lengths > 0
  starts, lengths = np.asarray(starts, dtype=np.int64)[keep], lengths[keep]
  # Step +1 inside a range; at each range start jump to its start.
  steps = np.ones(total, dtype=np.int64)
  heads = _offsets(lengths)[:-1]
  steps[0] = starts[0]
  steps[heads[1:]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
  return np.cumsum(steps)


def prefix_augment(sequences: Sequences, max_len: int | None = None) -> Examples:
  """([v1] -> v2), ([v1, v2] -> v3), ... for every sequence, in order.

  Prefixes keep their last `max_len` items when it is given.
  """
  if max_len is not None and max_len < 1:
    raise DataError(f"max_len must be >= 1, got {max_len}")
  lens = sequences.lengths()
  num_targets = np.maximum(lens - 1, 0)
  seq = np.repeat(np.arange(len(lens)), num_targets)
  # Position p (1..n-1) of each target inside its sequence.
  pos = _ranges(np.ones_like(num_targets), num_targets)
  target_index = sequences.offsets[seq] + pos
  prefix_len = pos if max_len is None else np.minimum(pos, max_len)
  items = sequences.items[_ranges(target_index - prefix_len, prefix_len)]
  return Examples(Sequences(_offsets(prefix_len), items), sequences.items[target_index])


def truncate(sequences: Sequences, max_len: int | None) -> Sequences:
  """Each sequence keeps its last `max_len` items."""
  if max_len is None:
    return sequences
  lens = np.minimum(sequences.lengths(), max_len)
  return Sequences(_offsets(lens), sequences.items[_ranges(sequences.offsets[1:] - lens, lens)])


def statistics(ds: SessionDataset) -> dict:
  """The numbers papers report: examples per split, items, average session length."""
  train_lens = ds.train.lengths()
  num_train = int(np.maximum(train_lens - 1, 0).sum())
  return {
      "items": int(ds.num_items),
      "train_sequences": len(ds.train),
      "train_examples": num_train,
      "valid_examples": len(ds.valid),
      "test_examples": len(ds.test),
      "train_clicks": int(train_lens.sum()),
      "avg_train_length": float(train_lens.mean()) if len(train_lens) else 0.0,
  }


def _check(ds: SessionDataset) -> None:
  for split, items in (
      ("train", ds.train.items),
      ("valid", ds.valid.prefixes.items),
      ("test", ds.test.prefixes.items),
      ("valid targets", ds.valid.targets),
      ("test targets", ds.test.targets),
  ):
    if len(items) and (items.min() < 1 or items.max() > ds.num_items):
      raise DataError(f"{ds.name}: {split} ids outside 1..{ds.num_items}")
  if ds.item_counts.shape != (ds.num_items + 1,) or ds.item_counts[0] != 0:
    raise DataError(f"{ds.name}: item_counts must have shape [{ds.num_items + 1}] with [0] == 0")


def make_dataset(
    name: str,
    num_items: int,
    train: Sequences,
    valid: Examples,
    test: Examples,
    manifest: dict | None = None,
) -> SessionDataset:
  """A checked SessionDataset; item_counts and manifest statistics computed here."""
  counts = np.bincount(train.items, minlength=num_items + 1).astype(np.int64)
  counts[0] = 0
  ds = SessionDataset(name, int(num_items), train, valid, test, counts[: num_items + 1], {})
  _check(ds)
  manifest = dict(manifest or {})
  manifest.update(
      name=name,
      num_items=int(num_items),
      format_version=FORMAT_VERSION,
      statistics={**manifest.get("statistics", {}), **statistics(ds)},
  )
  return dataclasses.replace(ds, manifest=manifest)


def save(ds: SessionDataset, directory: str | os.PathLike) -> None:
  """Writes data.npz + manifest.json into `directory` (atomically per file)."""
  os.makedirs(directory, exist_ok=True)
  arrays = {
      "train_offsets": ds.train.offsets,
      "train_items": ds.train.items,
      "item_counts": ds.item_counts,
  }
  for split in ("valid", "test"):
    ex = getattr(ds, split)
    arrays[f"{split}_offsets"] = ex.prefixes.offsets
    arrays[f"{split}_items"] = ex.prefixes.items
    arrays[f"{split}_targets"] = ex.targets
  with atomic.writing(os.path.join(directory, ARRAYS_FILE), "wb") as f:
    np.savez(f, **arrays)
  atomic.write_json(os.path.join(directory, MANIFEST_FILE), ds.manifest)


_REBUILD_HINT = (
    "prepare it again from the raw data (launch/prepare_data.py --rebuild, or "
    "load_dataset(..., rebuild=True))"
)


def read_manifest(directory: str | os.PathLike) -> dict:
  path = os.path.join(directory, MANIFEST_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path}: no prepared dataset here (missing {MANIFEST_FILE})") from None
  except UnicodeDecodeError as e:
    raise DataError(
        f"{path}: not UTF-8 text (byte {e.start}); the file is corrupt: " f"{_REBUILD_HINT}"
    ) from None
  except json.JSONDecodeError as e:
    raise DataError(
        f"{path}, line {e.lineno}: invalid JSON ({e.msg}); the file is truncated or "
        f"corrupt: {_REBUILD_HINT}"
    ) from None
  except (ValueError, RecursionError) as e:  # a number too long to convert, nesting too deep
    raise DataError(
        f"{path}: unreadable JSON ({type(e).__name__}: {str(e)[:100]}); the file "
        f"is corrupt: {_REBUILD_HINT}"
    ) from None
  if not isinstance(manifest, dict):
    raise DataError(
        f"{path}: expected a JSON object, got {type(manifest).__name__}; " f"{_REBUILD_HINT}"
    )
  return manifest


def _manifest_field(directory, manifest: dict, field: str, kind: type):
  where = at(os.path.join(directory, MANIFEST_FILE), field=field)
  if field not in manifest:
    raise DataError(f"{where}: missing; {_REBUILD_HINT}")
  value = manifest[field]
  if kind is int and (type(value) is not int or value < 0):
    raise DataError(f"{where}: expected an integer >= 0, got {value!r}")
  if kind is str and not isinstance(value, str):
    raise DataError(f"{where}: expected a string, got {value!r}")
  return value


_MAX_DEFLATE_RATIO = 1032  # no deflate stream expands more than this


def _check_sizes(path: str) -> None:
  """Raises ValueError if a member of the .npz claims more bytes than its file can hold.

  np.load allocates the shape an .npy header declares before it reads any data, so
  each header is checked against its member's size, and that size against the
  bytes stored for it.
  """
  with zipfile.ZipFile(path) as z:
    for info in z.infolist():
      stored = info.compress_type == zipfile.ZIP_STORED
      if info.file_size > info.compress_size * (1 if stored else _MAX_DEFLATE_RATIO):
        raise ValueError(
            f"member {info.filename} claims {info.file_size:,} bytes from "
            f"{info.compress_size:,} stored"
        )
      with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
          raise ValueError(f"member {info.filename}: unsupported .npy version {version}")
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        try:
          shape, _, dtype = read_header(f)
        except Exception as e:  # numpy's header parser also raises tokenize.TokenError
          raise ValueError(f"member {info.filename}: damaged .npy header ({e})") from None
      if math.prod(shape) * dtype.itemsize > info.file_size:
        raise ValueError(
            f"member {info.filename} declares shape {shape} of {dtype}, more than "
            f"its {info.file_size:,} bytes"
        )


def _read_arrays(path: str) -> dict:
  """The arrays of data.npz; any damage is one DataError naming the file."""
  try:
    with open(path, "rb") as f:
      magic = f.read(4)
    # np.load would take anything that is not a zip for a pickle; never go there.
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
      raise ValueError("empty file" if not magic else "not a zip (.npz) archive")
    _check_sizes(path)
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except FileNotFoundError:
    raise DataError(f"{path}: missing (a prepared dataset needs {ARRAYS_FILE})") from None
  except PermissionError:
    raise
  # zipfile meets damaged headers with any of these (bad offsets, "encrypted", ...).
  except (
      zipfile.BadZipFile,
      zlib.error,
      EOFError,
      ValueError,
      OSError,
      NotImplementedError,
      RuntimeError,
  ) as e:
    reason = "holds object arrays" if "pickle" in str(e) else str(e) or type(e).__name__
    raise DataError(
        f"{path}: corrupt or not a prepared dataset ({reason}); " f"{_REBUILD_HINT}"
    ) from None


def is_prepared(directory: str | os.PathLike) -> bool:
  return all(os.path.isfile(os.path.join(directory, f)) for f in (ARRAYS_FILE, MANIFEST_FILE))


def load(directory: str | os.PathLike) -> SessionDataset:
  """Loads a directory written by `save` (no pickles: allow_pickle=False)."""
  manifest = read_manifest(directory)
  name = _manifest_field(directory, manifest, "name", str)
  num_items = _manifest_field(directory, manifest, "num_items", int)
  path = os.path.join(directory, ARRAYS_FILE)
  a = _read_arrays(path)
  try:
    examples = {
        s: Examples(Sequences(a[f"{s}_offsets"], a[f"{s}_items"]), a[f"{s}_targets"])
        for s in ("valid", "test")
    }
    ds = SessionDataset(
        name,
        num_items,
        Sequences(a["train_offsets"], a["train_items"]),
        examples["valid"],
        examples["test"],
        a["item_counts"].astype(np.int64),
        manifest,
    )
    _check(ds)
  except KeyError as e:
    raise DataError(f"{path}: prepared dataset lacks {e}; {_REBUILD_HINT}") from None
  except DataError as e:  # arrays that read but do not fit together
    raise DataError(f"{path}: {e}; {_REBUILD_HINT}") from None
  return ds


def check_replace(directory: str | os.PathLike, manifest: dict, overwrite: bool = False) -> None:
  """Refuses to let `manifest`'s dataset replace a different one prepared in `directory`.

  Compared: name, recipe, reader options and each source's sha256. Identical
  data may be written again; anything else needs overwrite=True.
  """
  if overwrite or not is_prepared(directory):
    return
  hint = (
      "pass overwrite=True (launch/prepare_data.py --overwrite) to replace it, or choose "
      "another output directory"
  )
  try:
    old = read_manifest(directory)
  except DataError:
    raise DataError(
        f"{os.path.join(directory, MANIFEST_FILE)} cannot be read (damaged); "
        f"refusing to replace what is in {directory}: {hint}"
    ) from None
  diffs = []
  for key in ("name", "recipe", "reader_options"):
    a, b = old.get(key), manifest.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += [
          f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}"
          for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k)
      ]
    elif a != b:
      diffs.append(f"{key}: {a!r} -> {b!r}")
  old_src, new_src = old.get("sources", []), manifest.get("sources", [])
  for i in range(max(len(old_src), len(new_src))):
    a = old_src[i] if i < len(old_src) else {}
    b = new_src[i] if i < len(new_src) else {}
    if a.get("sha256") != b.get("sha256"):
      diffs.append(
          f"sources[{i}]: {a.get('path')} sha256 {a.get('sha256')} -> "
          f"{b.get('path')} sha256 {b.get('sha256')}"
      )
  if diffs:
    raise DataError(
        f"{directory}: already holds a different prepared dataset " f"({'; '.join(diffs)}); {hint}"
    )


def statistics_table(datasets: TypingSequence[SessionDataset]) -> str:
  """The statistics table papers print, as markdown: one row per dataset."""
  lines = [
      "| dataset | train examples | valid | test | items | avg length |",
      "|---|---|---|---|---|---|",
  ]
  for ds in datasets:
    st = {**ds.manifest.get("statistics", {}), **statistics(ds)}
    avg = st.get("avg_length", st["avg_train_length"])
    lines.append(
        f"| {ds.name} | {st['train_examples']:,} | {st['valid_examples']:,} | "
        f"{st['test_examples']:,} | {st['items']:,} | {avg:.2f} |"
    )
  return "\n".join(lines)
