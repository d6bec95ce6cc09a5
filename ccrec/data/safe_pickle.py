"""The session pickles of SR-GNN, DHCN and EODRec, loaded without executing anything.

Those repositories distribute `train.txt` / `test.txt` as pickles of
`(list_of_prefix_lists, list_of_targets)`. A pickle can run arbitrary code
when loaded, so this module never calls `pickle.load` on an unchecked file:

1. every opcode is checked against a whitelist that can only build lists,
   tuples and ints (no GLOBAL/STACK_GLOBAL/REDUCE/BUILD/INST/OBJ/NEWOBJ/
   PERSID, so no callable can even be named);
2. the file is then unpickled by an Unpickler whose find_class and
   persistent_load refuse (a second wall);
3. the result must be exactly a pair (list of int lists, list of ints), holding
   at most `max_ids` ids counted with repetition (default: one per byte of the
   file). Memo references let a small file repeat one list many times; every
   repetition would be materialised later, so such a file is refused before.

`from_pickles` turns a train/test pair into a SessionDataset. SR-GNN writes a
session's prefixes longest-first: s[:-1] -> s[-1], s[:-2] -> s[-2], ..., so
the training sessions are rebuilt from each maximal run of examples in which
every prefix is the previous prefix minus its last item and every target is
that removed item. Prefix-augmenting the rebuilt sessions gives back exactly
the training examples (checked; each target counted once). Files that do not
have this structure raise, unless strict=False, which keeps the rebuilt
sessions and records how many examples they add.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools

import numpy as np

from ccrec.data import readers
from ccrec.data.dataset import Examples, Sequences, make_dataset, prefix_augment, truncate
from ccrec.data.errors import DataError

ALLOWED_OPCODES = frozenset(
    {
        "PROTO",
        "FRAME",
        "STOP",
        "MARK",
        "POP",
        "POP_MARK",
        "DUP",
        "EMPTY_LIST",
        "LIST",
        "APPEND",
        "APPENDS",
        "EMPTY_TUPLE",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "PUT",
        "BINPUT",
        "LONG_BINPUT",
        "MEMOIZE",
        "GET",
        "BINGET",
        "LONG_BINGET",
    }
)


MAX_ID = np.iinfo(np.int32).max  # prepared datasets store ids as int32

# Opcodes that build plain values other than ints: named in the error instead of "objects".
_OTHER_VALUES = {
    "FLOAT": "the float",
    "BINFLOAT": "the float",
    "NONE": "None",
    "NEWTRUE": "True",
    "NEWFALSE": "False",
    "STRING": "the string",
    "BINSTRING": "the string",
    "SHORT_BINSTRING": "the string",
    "UNICODE": "the string",
    "BINUNICODE": "the string",
    "SHORT_BINUNICODE": "the string",
    "BINUNICODE8": "the string",
    "BINBYTES": "the bytes",
    "SHORT_BINBYTES": "the bytes",
    "BINBYTES8": "the bytes",
    "BYTEARRAY8": "the bytearray",
    "EMPTY_DICT": "a dict",
    "DICT": "a dict",
    "EMPTY_SET": "a set",
    "FROZENSET": "a frozenset",
}


class _NoGlobals(pickle.Unpickler):

  def find_class(self, module, name):
    raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

  def persistent_load(self, pid):
    raise pickle.UnpicklingError("refusing persistent ids")


def check_opcodes(data: bytes, path: str) -> None:
  """Raises DataError at the first opcode outside ALLOWED_OPCODES (nothing is executed).

  An opcode that names, builds or calls objects is reported first; a file that only holds
  other plain values (a float id, a string) is reported at the first such value.
  """
  value = None
  try:
    for opcode, arg, pos in pickletools.genops(io.BytesIO(data)):
      if opcode.name in _OTHER_VALUES:
        value = value or (pos, _OTHER_VALUES[opcode.name], arg)
      elif opcode.name not in ALLOWED_OPCODES:
        detail = f" {arg!r}" if isinstance(arg, str) else ""
        raise DataError(
            f"{path}, byte {pos}: pickle opcode {opcode.name}{detail} is not allowed; "
            "a session pickle may hold only lists, tuples and ints, and this file "
            "asks to construct or call other objects (refused, nothing was run)"
        )
  except DataError:
    raise
  except Exception as e:  # pickletools raises ValueError and friends on garbage
    if value is None:
      raise DataError(f"{path}: not a valid pickle ({e})") from None
  if value is not None:
    pos, what, arg = value
    shown = f" {arg!r:.80}" if what.startswith("the ") else ""
    raise DataError(
        f"{path}, byte {pos}: the pickle holds {what}{shown}; a session pickle may "
        "hold only lists, tuples and ints (ids are integers), so it is refused "
        "(nothing was run)"
    )


def load_examples(path: str | os.PathLike, max_ids: int | None = None) -> tuple[list, list]:
  """(prefixes, targets) from a session pickle, checked as described in the module doc.

  max_ids: the most ids (prefix items and targets, counted with repetition) the file may
    hold; None = one per byte of the file.
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise DataError(f"{path}: file not found") from None
  check_opcodes(data, path)
  try:
    obj = _NoGlobals(io.BytesIO(data)).load()
  except Exception as e:
    raise DataError(f"{path}: unpickling failed ({e})") from None
  if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
    size = len(obj) if hasattr(obj, "__len__") else "?"
    raise DataError(
        f"{path}: expected a pair (list_of_prefix_lists, list_of_targets), "
        f"got {type(obj).__name__} of length {size}"
    )
  prefixes, targets = obj
  if not isinstance(prefixes, list) or not isinstance(targets, list):
    raise DataError(f"{path}: both halves of the pair must be lists")
  if len(prefixes) != len(targets):
    raise DataError(f"{path}: {len(prefixes)} prefixes but {len(targets)} targets")
  for i, p in enumerate(prefixes):
    if not isinstance(p, list):
      raise DataError(
          f"{path}: example {i}: the prefix must be a non-empty list of ids >= 1, "
          f"got {type(p).__name__}"
      )
  limit = len(data) if max_ids is None else max_ids
  total = sum(map(len, prefixes)) + len(targets)
  if total > limit:
    bound = "max_ids" if max_ids is not None else f"one per byte of the {len(data):,}-byte file"
    raise DataError(
        f"{path}: the pickle holds {total:,} ids counted with repetition, more than "
        f"{limit:,} ({bound}): it repeats lists through memo references (built to "
        "exhaust memory, or damaged); pass max_ids= to allow more"
    )
  for i, (p, t) in enumerate(zip(prefixes, targets)):
    if not isinstance(p, list) or not p or not all(type(x) is int and x > 0 for x in p):
      raise DataError(
          f"{path}: example {i}: the prefix must be a non-empty list of ids >= 1, " f"got {p!r:.80}"
      )
    if type(t) is not int or t < 1:
      raise DataError(f"{path}: example {i}: the target must be an id >= 1, got {t!r:.80}")
    if t > MAX_ID or max(p) > MAX_ID:
      raise DataError(
          f"{path}: example {i}: id {max(t, max(p))} is out of range (ids are stored "
          f"as int32: 1..{MAX_ID})"
      )
  return prefixes, targets


def rebuild_sessions(prefixes: list, targets: list) -> tuple[Sequences, int]:
  """Sessions from SR-GNN's longest-first prefix examples: (sessions, examples added).

  added = 0 means prefix augmentation of the sessions reproduces the examples.
  """
  sessions, added = [], 0
  i, n = 0, len(prefixes)
  while i < n:
    session = prefixes[i] + [targets[i]]
    j = i + 1
    while (
        j < n
        and len(prefixes[j]) == len(prefixes[j - 1]) - 1
        and targets[j] == prefixes[j - 1][-1]
        and prefixes[j] == prefixes[j - 1][:-1]
    ):
      j += 1
    added += len(prefixes[j - 1]) - 1  # prefixes shorter than the run's last one were absent
    sessions.append(session)
    i = j
  return Sequences.from_lists(sessions), added


VALID_IDS_PER_BYTE = 64  # default bound on validation ids per byte of the training pickle


def _check_valid_size(
    train_path, lengths: np.ndarray, max_len: int | None, max_ids: int | None
) -> None:
  """Refuses validation examples whose prefixes would hold more than the bound's ids.

  Prefix augmentation is quadratic in a session's length, and with strict=False a
  rebuilt session may be far longer than any example in the file.
  """
  n = np.maximum(lengths - 1, 0)  # targets per session; the p-th prefix has min(p, max_len) ids
  c = n if max_len is None else np.minimum(n, max_len)
  ids = int((c * (c + 1) // 2 + (n - c) * c).sum())
  limit = VALID_IDS_PER_BYTE * os.path.getsize(train_path) if max_ids is None else max_ids
  if ids > limit:
    raise DataError(
        f"{train_path}: its validation examples would hold {ids:,} ids (prefixes of "
        f"rebuilt sessions up to {int(lengths.max()):,} long), more than {limit:,}; "
        "pass max_len= to cut prefixes, or max_ids= to allow more"
    )


def from_pickles(
    train_path,
    test_path,
    *,
    name: str = "pickled",
    valid_fraction: float = 0.1,
    seed: int = 0,
    max_len: int | None = None,
    strict: bool = True,
    max_ids: int | None = None,
):
  """A SessionDataset from SR-GNN-style train/test pickles.

  Training sessions are rebuilt (see module doc); a seeded `valid_fraction` of
  them become validation (prefix-augmented); test examples are kept as given
  (prefixes truncated to `max_len` if given). Ids are kept; num_items = the
  largest id seen. `max_ids` bounds the ids of each file (see `load_examples`) and of
  the validation examples (default: VALID_IDS_PER_BYTE per byte of the training file).
  """
  if not 0.0 <= valid_fraction < 1.0:
    raise DataError(f"setting valid_fraction must be in [0, 1), got {valid_fraction}")
  tr_prefixes, tr_targets = load_examples(train_path, max_ids)
  te_prefixes, te_targets = load_examples(test_path, max_ids)
  if not tr_prefixes or not te_prefixes:
    raise DataError(f"{train_path if not tr_prefixes else test_path}: no examples")
  sessions, added = rebuild_sessions(tr_prefixes, tr_targets)
  if added and strict:
    raise DataError(
        f"{train_path}: the examples are not complete longest-first prefix runs "
        f"(rebuilding sessions would add {added} examples); pass strict=False to "
        "accept the rebuilt sessions"
    )
  test = Examples(truncate(Sequences.from_lists(te_prefixes), max_len), np.asarray(te_targets))
  num_items = int(max(sessions.items.max(), test.prefixes.items.max(), test.targets.max()))
  rng = np.random.default_rng(seed)
  is_valid = np.zeros(len(sessions), dtype=bool)
  is_valid[
      rng.choice(len(sessions), size=int(round(len(sessions) * valid_fraction)), replace=False)
  ] = True
  _check_valid_size(train_path, sessions.lengths()[is_valid], max_len, max_ids)
  valid = prefix_augment(sessions.take(np.flatnonzero(is_valid)), max_len)
  sources = [
      {
          "path": os.path.abspath(p),
          "sha256": readers.sha256_file(p),
          "format": "session-pickle",
          "size": os.path.getsize(p),
      }
      for p in (train_path, test_path)
  ]
  lens = sessions.lengths()
  return make_dataset(
      name,
      num_items,
      sessions.take(np.flatnonzero(~is_valid)),
      valid,
      test,
      {
          "recipe": {
              "protocol": "session",
              "from": "pickles",
              "valid_fraction": valid_fraction,
              "seed": seed,
              "max_len": max_len,
              "strict": strict,
          },
          "sources": sources,
          "id_map": {},
          "id_order": "as in the pickles",
          "statistics": {
              "given_train_examples": len(tr_targets),
              "rebuilt_sessions": len(sessions),
              "examples_added_by_rebuilding": added,
              "avg_length": float(lens.mean()),
          },
      },
  )
