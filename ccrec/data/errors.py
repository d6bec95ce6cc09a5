"""The one error type of ccrec.data: bad input, named precisely.

Every reader and recipe step raises `DataError` with the file, the 1-based
line and the field (or the setting) at fault, so a researcher can open the
file at that line; nothing returns a silently partial dataset.
"""

from __future__ import annotations


class DataError(ValueError):
  """Bad input data or an invalid data setting."""


class DataWarning(UserWarning):
  """Input that reads, but looks damaged (e.g. a last line without its line break)."""


def at(path, line: int | None = None, field: str | None = None) -> str:
  """'path, line 12, field "item_id"' (the parts that are known)."""
  parts = [str(path)]
  if line is not None:
    parts.append(f"line {line}")
  if field is not None:
    parts.append(f"field {field!r}")
  return ", ".join(parts)
