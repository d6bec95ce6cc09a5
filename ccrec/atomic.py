"""Writing files whole or not at all: a temporary file beside the target, then a rename.

A reader (or a rerun after a crash) sees the old file or the new one, never half of
one: `os.replace` is atomic within a directory. Only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def writing(path: str | os.PathLike, mode: str = "w", **open_args: Any) -> Iterator[IO]:
  """`with writing(path, "wb") as f: ...` writes PATH.tmp and renames it to `path` on success.

  If the block raises, the temporary file is removed and `path` is left as it was.
  """
  path = os.fspath(path)
  tmp = path + ".tmp"
  try:
    with open(tmp, mode, **open_args) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(
    path: str | os.PathLike, obj: Any, *, indent: int = 1, sort_keys: bool = True, **dump_args: Any
) -> None:
  """Writes `obj` as JSON to `path` through `writing`."""
  with writing(path, "w") as f:
    json.dump(obj, f, indent=indent, sort_keys=sort_keys, **dump_args)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` through `writing`."""
  with writing(path, "wb") as f:
    f.write(data)
