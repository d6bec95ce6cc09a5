"""Vectorised parsing of delimited text (CSV/TSV click logs) with numpy alone.

Click logs run to tens of millions of rows (Yoochoose: 33M), too many for the
csv module, and pandas is not a dependency. The file is read in blocks of
whole lines; each block is a uint8 array in which newlines and delimiters are
found with numpy, every line is checked to have the expected number of fields,
and columns are parsed by vectorised digit arithmetic. Quoted fields holding
the delimiter are not supported (no click-log format uses them).

Every error names the file, the 1-based line and the field.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Iterator

import numpy as np

from ccrec.data.errors import DataError, at

_BLOCK_BYTES = 1 << 26  # 64 MiB of whole lines per block
_MAX_DIGITS = 18
_DELIMITER_NAMES = {b"\t": "tab", b",": "comma", b";": "semicolon", b" ": "space", b"|": "pipe"}


def open_binary(path: str | os.PathLike):
  """The file at `path` opened for binary reading (.gz decompressed)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found")
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_header(path: str | os.PathLike) -> str:
  """The first line of the file, without its line terminator."""
  with open_binary(path) as f:
    line = f.readline()
  try:
    return line.decode("utf-8").rstrip("\r\n").lstrip("\ufeff")
  except UnicodeDecodeError:
    raise DataError(f"{at(path, 1)}: header is not UTF-8 text") from None


@dataclasses.dataclass
class Block:
  """Rows of one block of a delimited file: field j of row r is buf[starts[r, j]:ends[r, j]]."""

  path: str
  buf: np.ndarray  # uint8
  starts: np.ndarray  # int64 [R, K]
  ends: np.ndarray  # int64 [R, K]
  lines: np.ndarray  # int64 [R], 1-based line numbers in the file
  fields: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.lines)

  def _span(self, field: str) -> tuple[np.ndarray, np.ndarray]:
    j = self.fields.index(field)
    s, e = self.starts[:, j], self.ends[:, j]
    # Strip one pair of surrounding double quotes.
    if len(s):
      quoted = (e - s >= 2) & (self.buf[np.minimum(s, len(self.buf) - 1)] == 34) & (
          self.buf[np.maximum(e - 1, 0)] == 34)
      if quoted.any():
        s, e = s + quoted, e - quoted
    return s, e

  def text(self, row: int, field: str) -> str:
    s, e = self._span(field)
    return bytes(self.buf[s[row]:e[row]]).decode("utf-8", errors="replace")

  def _fail(self, bad: np.ndarray, field: str, what: str) -> None:
    row = int(np.flatnonzero(bad)[0])
    raise DataError(f"{at(self.path, int(self.lines[row]), field)}: expected {what}, "
                    f"got {self.text(row, field)!r}")

  def ints(self, field: str) -> np.ndarray:
    """int64 [R]: the field as a (signed) decimal integer."""
    s, e = self._span(field)
    values, ok = parse_ints(self.buf, s, e)
    if not ok.all():
      self._fail(~ok, field, "an integer")
    return values

  def floats(self, field: str) -> np.ndarray:
    """float64 [R]: plain decimals parsed vectorised, anything else (1e9) by Python's float()."""
    s, e = self._span(field)
    values, ok = parse_decimals(self.buf, s, e)
    for row in np.flatnonzero(~ok):
      try:
        values[row] = float(self.text(row, field))
      except ValueError:
        self._fail(np.arange(len(ok)) == row, field, "a number")
    if not np.isfinite(values).all():
      self._fail(~np.isfinite(values), field, "a finite number")
    return values

  def tokens(self, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes int64 [R], vocab [U]) with vocab[codes] == the field's text.

    The vocab holds int64 when every value is a canonical integer (no leading
    zeros), else str.
    """
    s, e = self._span(field)
    if (e <= s).any():
      self._fail(e <= s, field, "a non-empty id")
    values, ok = parse_ints(self.buf, s, e)
    leading_zero = (e - s > 1) & (self.buf[np.minimum(s, len(self.buf) - 1)] == 48)
    if ok.all() and not leading_zero.any():
      vocab, codes = np.unique(values, return_inverse=True)
      return codes.astype(np.int64), vocab
    width = int((e - s).max())
    cols = np.arange(width)
    index = np.minimum(s[:, None] + cols[None, :], len(self.buf) - 1)
    inside = cols[None, :] < (e - s)[:, None]
    mat = np.where(inside, self.buf[index], 0).astype(np.uint8)
    nul = (inside & (mat == 0)).any(axis=1)
    if nul.any():
      self._fail(nul, field, "an id without NUL bytes")
    raw = np.ascontiguousarray(mat).view(f"S{width}").ravel()
    vocab, codes = np.unique(raw, return_inverse=True)
    return codes.astype(np.int64), np.char.decode(vocab, "utf-8", errors="replace").astype(str)

  def datetimes(self, field: str) -> np.ndarray:
    """float64 [R] unix seconds (UTC) from 'YYYY-MM-DD' or 'YYYY-MM-DDTHH:MM:SS[.fff][Z]'."""
    s, e = self._span(field)
    seconds, ok = parse_iso(self.buf, s, e)
    if not ok.all():
      self._fail(~ok, field, "a date YYYY-MM-DD or time YYYY-MM-DDTHH:MM:SS[.fff][Z]")
    return seconds


def parse_ints(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Signed decimal integers in buf[s:e]: (values int64, ok bool)."""
  n = len(buf)
  neg = (e - s >= 2) & (buf[np.minimum(s, n - 1)] == 45) if n else np.zeros(len(s), bool)
  s = s + neg
  width = e - s
  ok = (width >= 1) & (width <= _MAX_DIGITS)
  values = np.zeros(len(s), dtype=np.int64)
  for k in range(int(width.max(initial=0)) if len(s) else 0):
    active = ok & (k < width)
    digit = buf[np.minimum(s + k, n - 1)].astype(np.int64) - 48
    ok &= ~(active & ((digit < 0) | (digit > 9)))
    np.copyto(values, values * 10 + digit, where=active & ok)
  values[neg] *= -1
  return values, ok


def parse_decimals(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Decimals like -12, 3.25, 7. in buf[s:e]: (values float64, ok bool)."""
  n = len(buf)
  neg = (e - s >= 2) & (buf[np.minimum(s, n - 1)] == 45) if n else np.zeros(len(s), bool)
  s = s + neg
  width = e - s
  ok = (width >= 1) & (width <= _MAX_DIGITS + 1)
  mantissa = np.zeros(len(s), dtype=np.int64)
  seen_dot = np.zeros(len(s), dtype=bool)
  frac_digits = np.zeros(len(s), dtype=np.int64)
  for k in range(int(width.max(initial=0)) if len(s) else 0):
    active = ok & (k < width)
    c = buf[np.minimum(s + k, n - 1)].astype(np.int64)
    is_dot = active & (c == 46)
    ok &= ~(is_dot & seen_dot)
    digit = c - 48
    is_digit = active & (digit >= 0) & (digit <= 9)
    ok &= ~(active & ~is_digit & ~is_dot)
    np.copyto(mantissa, mantissa * 10 + digit, where=is_digit & ok)
    frac_digits += is_digit & seen_dot
    seen_dot |= is_dot
  ok &= ~(seen_dot & (width == 1))
  values = mantissa / np.power(10.0, frac_digits)
  values[neg] *= -1
  return values, ok


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
  """Days since 1970-01-01 of the proleptic Gregorian date (H. Hinnant's algorithm)."""
  y = y - (m <= 2)
  era = np.floor_divide(y, 400)
  yoe = y - era * 400
  doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
  doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468


def parse_iso(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """ISO-8601 dates/times in buf[s:e] as UTC unix seconds: (float64, ok bool)."""
  width = e - s
  ok = width >= 10

  def num(offset, digits):
    v, good = parse_ints(buf, s + offset, s + offset + digits)
    return v, good & (buf[np.minimum(s + offset, len(buf) - 1)] != 45)

  def char_is(offset, chars):
    c = buf[np.minimum(s + offset, len(buf) - 1)]
    return np.isin(c, np.frombuffer(chars, np.uint8))

  year, g1 = num(0, 4)
  month, g2 = num(5, 2)
  day, g3 = num(8, 2)
  ok &= g1 & g2 & g3 & char_is(4, b"-") & char_is(7, b"-")
  ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
  seconds = days_from_civil(year, month, day).astype(np.float64) * 86400.0
  has_time = width > 10
  hour, g4 = num(11, 2)
  minute, g5 = num(14, 2)
  sec, g6 = num(17, 2)
  time_ok = (width >= 19) & g4 & g5 & g6 & char_is(10, b"T ") & char_is(13, b":") & char_is(16, b":")
  time_ok &= (hour < 24) & (minute < 60) & (sec < 61)
  # Optional '.fff' then optional 'Z'.
  zulu = has_time & (buf[np.maximum(e - 1, 0)] == 90)
  frac_end = e - zulu
  has_frac = (width > 19) & (frac_end > s + 20)
  frac, g7 = parse_ints(buf, s + 20, np.where(has_frac, frac_end, s + 21))
  frac_ok = ~has_frac | (g7 & char_is(19, b".") & (buf[np.minimum(s + 20, len(buf) - 1)] != 45))
  tail_ok = has_frac | (frac_end == s + 19)
  ok &= ~has_time | (time_ok & frac_ok & tail_ok)
  frac_seconds = np.where(has_frac, frac / np.power(10.0, np.maximum(frac_end - s - 20, 0)), 0.0)
  seconds += np.where(has_time, hour * 3600 + minute * 60 + sec + frac_seconds, 0.0)
  return seconds, ok


def _split_block(path: str, buf: np.ndarray, first_line: int, delimiter: bytes,
                 fields: tuple[str, ...]) -> Block:
  """Splits a block of whole lines (each ending in a newline) into fields."""
  nl = np.flatnonzero(buf == 10)
  line_starts = np.concatenate([[0], nl[:-1] + 1]).astype(np.int64)
  line_ends = nl - ((nl > line_starts) & (buf[np.maximum(nl - 1, 0)] == 13))  # drop '\r'
  lines = first_line + np.arange(len(nl), dtype=np.int64)
  keep = line_ends > line_starts  # blank lines are skipped
  line_starts, line_ends, lines = line_starts[keep], line_ends[keep], lines[keep]
  k = len(fields)
  delim = np.flatnonzero(buf == delimiter[0])
  owner = np.searchsorted(line_ends, delim)  # the line each delimiter is in
  in_line = owner < len(line_ends)
  delim, owner = delim[in_line], owner[in_line]
  in_line = delim >= line_starts[owner]
  delim, owner = delim[in_line], owner[in_line]
  counts = np.bincount(owner, minlength=len(line_ends))
  if (counts != k - 1).any():
    bad = int(np.flatnonzero(counts != k - 1)[0])
    text = bytes(buf[line_starts[bad]:line_ends[bad]]).decode("utf-8", errors="replace")
    hint = ""
    if counts[bad] == 0:
      others = [name for d, name in _DELIMITER_NAMES.items()
                if d != delimiter and d.decode() in text]
      if others:
        hint = f" (wrong delimiter? the line contains {' and '.join(others)})"
    raise DataError(f"{at(path, int(lines[bad]))}: expected {k} fields separated by "
                    f"{_DELIMITER_NAMES.get(delimiter, repr(delimiter))}, "
                    f"found {counts[bad] + 1}{hint}: {text[:200]!r}")
  delim = delim.reshape(len(line_ends), k - 1)
  starts = np.concatenate([line_starts[:, None], delim + 1], axis=1)
  ends = np.concatenate([delim, line_ends[:, None]], axis=1)
  return Block(path, buf, starts, ends, lines, fields)


def blocks(path: str | os.PathLike, delimiter: str, fields: tuple[str, ...], *,
           skip_lines: int = 0, block_bytes: int = _BLOCK_BYTES) -> Iterator[Block]:
  """The data rows of a delimited file, a block of whole lines at a time."""
  path = os.fspath(path)
  delim = delimiter.encode()
  if len(delim) != 1:
    raise DataError(f"{path}: delimiter must be one byte, got {delimiter!r}")
  with open_binary(path) as f:
    for _ in range(skip_lines):
      f.readline()
    line = skip_lines + 1
    carry = b""
    while True:
      chunk = f.read(block_bytes)
      data = carry + chunk
      if not chunk:
        if data:
          data += b"\n"
        else:
          break
      cut = data.rfind(b"\n") + 1
      if cut == 0:
        carry = data
        continue
      carry = data[cut:]
      buf = np.frombuffer(data, dtype=np.uint8, count=cut)
      block = _split_block(path, buf, line, delim, fields)
      line += int(np.count_nonzero(buf == 10))
      yield block
      if not chunk:
        break


def merge_tokens(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Concatenates per-block (codes, vocab) into one (codes, vocab) with a shared vocab."""
  if not parts:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  vocabs = [v for _, v in parts]
  if any(v.dtype.kind != "i" for v in vocabs):
    vocabs = [v.astype(str) for v in vocabs]
  vocab = np.unique(np.concatenate(vocabs))
  codes = [np.searchsorted(vocab, v)[c] for (c, _), v in zip(parts, vocabs)]
  return np.concatenate(codes), vocab
