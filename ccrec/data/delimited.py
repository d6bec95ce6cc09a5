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

_BLOCK_BYTES = 1 << 24  # 16 MiB of whole lines per block (column passes stay in cache)
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
  _has_quotes: bool | None = None

  def __len__(self) -> int:
    return len(self.lines)

  def _span(self, field: str) -> tuple[np.ndarray, np.ndarray]:
    j = self.fields.index(field)
    s, e = self.starts[:, j], self.ends[:, j]
    if self._has_quotes is None:
      self._has_quotes = bool((self.buf == 34).any())
    # Strip one pair of surrounding double quotes.
    if len(s) and self._has_quotes:
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
      return factorize_ints(values)
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


_POW10 = 10 ** np.arange(_MAX_DIGITS + 1, dtype=np.int64)


def _right_aligned(buf: np.ndarray, s: np.ndarray, e: np.ndarray, width: int):
  """(chars uint8 [R, width], inside bool [R, width]): buf[s:e] right-aligned, '0' outside."""
  cols = np.arange(width, dtype=np.int64)
  inside = cols[None, :] >= (width - (e - s))[:, None]
  chars = buf[np.clip(e[:, None] - width + cols[None, :], 0, max(len(buf) - 1, 0))]
  chars[~inside] = 48
  return chars, inside


def _sign(buf: np.ndarray, s: np.ndarray, e: np.ndarray):
  if not len(buf):
    return np.zeros(len(s), bool), s
  neg = (e - s >= 2) & (buf[np.minimum(s, len(buf) - 1)] == 45)
  return neg, s + neg


def _column_digits(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
  """uint8 digit values at buf[pos] (non-digits wrap to values > 9)."""
  return buf[pos] - np.uint8(48)


def _parse_unsigned(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  width = e - s
  ok = (width >= 1) & (width <= _MAX_DIGITS)
  values = np.zeros(len(s), dtype=np.int64)
  if not len(s):
    return values, ok
  w = int(np.clip(width.max(), 1, _MAX_DIGITS))
  uniform = bool((width == w).all())
  bad = np.zeros(len(s), dtype=bool)
  last = len(buf) - 1
  for j in range(w):
    pos = e - (w - j)
    digit = _column_digits(buf, np.clip(pos, 0, last) if not uniform else pos)
    if not uniform:
      digit[pos < s] = 0
    bad |= digit > 9
    values *= 10
    values += digit
  return values, ok & ~bad


def parse_ints(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Signed decimal integers in buf[s:e]: (values int64, ok bool).

  One pass per digit column over contiguous arrays, right-aligned so that every
  row accumulates values * 10 + digit (leading columns count as 0). Rows that
  fail are parsed again with a leading '-'.
  """
  values, ok = _parse_unsigned(buf, s, e)
  if not ok.all() and len(buf):
    retry = np.flatnonzero(~ok & (e - s >= 2))
    retry = retry[buf[s[retry]] == 45]
    if len(retry):
      negative, good = _parse_unsigned(buf, s[retry] + 1, e[retry])
      values[retry] = -negative
      ok[retry] = good
  return values, ok


def parse_decimals(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Decimals like -12, 3.25, 7. in buf[s:e]: (values float64, ok bool)."""
  neg, s = _sign(buf, s, e)
  width = e - s
  ok = (width >= 1) & (width <= _MAX_DIGITS + 1)
  if not len(s):
    return np.zeros(0), ok
  w = int(np.clip(width.max(), 1, _MAX_DIGITS + 1))
  chars, inside = _right_aligned(buf, s, np.minimum(e, s + w), w)
  is_dot = chars == 46
  digits = chars - np.uint8(48)
  is_digit = digits <= 9
  ok &= (is_digit | is_dot).all(axis=1) & (is_dot.sum(axis=1) <= 1) & ~(is_dot.any(axis=1) & (width == 1))
  ok &= (is_digit & inside).sum(axis=1) <= _MAX_DIGITS
  # Exponent of each digit column: the number of digit columns to its right.
  exponent = np.cumsum(is_digit[:, ::-1], axis=1)[:, ::-1] - 1
  mantissa = (np.where(is_digit & inside, digits, 0).astype(np.int64)
              * _POW10[np.clip(exponent, 0, _MAX_DIGITS)]).sum(axis=1)
  frac_digits = np.where(is_dot.any(axis=1), w - 1 - np.argmax(is_dot, axis=1), 0)
  values = mantissa / _POW10[frac_digits].astype(np.float64)
  return np.where(neg, -values, values), ok


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
  """Days since 1970-01-01 of the proleptic Gregorian date (H. Hinnant's algorithm)."""
  y = y - (m <= 2)
  era = np.floor_divide(y, 400)
  yoe = y - era * 400
  doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
  doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468


def _fixed(buf: np.ndarray, s: np.ndarray, lo: int, hi: int, ok: np.ndarray) -> np.ndarray:
  """int64 value of the digits at buf[s + lo : s + hi]; clears ok where one is not a digit."""
  value = np.zeros(len(s), dtype=np.int64)
  for k in range(lo, hi):
    digit = _column_digits(buf, s + k)
    ok &= digit <= 9
    value *= 10
    value += digit
  return value


def parse_iso(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """ISO-8601 dates/times in buf[s:e] as UTC unix seconds: (float64, ok bool).

  Accepted: YYYY-MM-DD, and YYYY-MM-DD(T| )HH:MM:SS with an optional .fraction and 'Z'.
  """
  width = e - s
  ok = width >= 10
  if not len(s):
    return np.zeros(0), ok
  last = len(buf) - 1
  # Rows too short for a position read a safe in-buffer byte; they fail `ok` anyway.
  safe = np.where(ok, s, 0)

  def char(k, options, rows):
    c = buf[np.minimum(rows + k, last)]
    hit = c == options[0]
    for other in options[1:]:
      hit |= c == other
    return hit

  year = _fixed(buf, safe, 0, 4, ok)
  month = _fixed(buf, safe, 5, 7, ok)
  day = _fixed(buf, safe, 8, 10, ok)
  ok &= char(4, b"-", safe) & char(7, b"-", safe)
  ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
  seconds = days_from_civil(year, month, day).astype(np.float64) * 86400.0
  has_time = width > 10
  if not has_time.any():
    return seconds, ok
  timed = has_time & (width >= 19)
  ok &= ~has_time | timed
  rows = np.where(timed, s, 0)
  time_ok = np.ones(len(s), dtype=bool)
  hour = _fixed(buf, rows, 11, 13, time_ok)
  minute = _fixed(buf, rows, 14, 16, time_ok)
  sec = _fixed(buf, rows, 17, 19, time_ok)
  time_ok &= char(10, b"T ", rows) & char(13, b":", rows) & char(16, b":", rows)
  time_ok &= (hour < 24) & (minute < 60) & (sec < 61)
  zulu = has_time & (buf[np.maximum(e - 1, 0)] == 90)
  frac_len = np.where(timed, width - zulu - 20, 0)  # digits after the '.'
  tail_ok = (frac_len >= 1) | (width - zulu == 19)
  frac_len = np.maximum(frac_len, 0)
  frac = np.zeros(len(s))
  if frac_len.any():
    tail_ok &= (frac_len == 0) | char(19, b".", rows)
    for k in range(int(frac_len.max())):
      on = k < frac_len
      digit = _column_digits(buf, np.where(on, rows + 20 + k, 0))
      tail_ok &= ~on | (digit <= 9)
      frac += np.where(on, digit * 10.0 ** -(k + 1), 0.0)
  ok &= ~has_time | (time_ok & tail_ok)
  seconds += np.where(has_time, hour * 3600 + minute * 60 + sec + frac, 0.0)
  return seconds, ok


def _split_block(path: str, buf: np.ndarray, first_line: int, delimiter: bytes,
                 fields: tuple[str, ...]) -> Block:
  """Splits a block of whole lines (each ending in a newline) into fields."""
  k = len(fields)
  # Fast path: every line has exactly k - 1 delimiters and no blank lines, so the
  # separators (delimiters and newlines) repeat with period k.
  seps = np.flatnonzero((buf == delimiter[0]) | (buf == 10))
  if len(seps) % k == 0 and len(seps):
    seps = seps.reshape(-1, k)
    if (buf[seps[:, -1]] == 10).all() and (k == 1 or (buf[seps[:, :-1]] == delimiter[0]).all()):
      line_starts = np.empty(len(seps), dtype=np.int64)
      line_starts[0] = 0
      line_starts[1:] = seps[:-1, -1] + 1
      if (seps[:, 0] > line_starts).all():  # no blank lines
        starts = np.concatenate([line_starts[:, None], seps[:, :-1] + 1], axis=1)
        ends = seps.copy()
        last = ends[:, -1]
        ends[:, -1] -= (last > starts[:, -1]) & (buf[np.maximum(last - 1, 0)] == 13)  # '\r'
        lines = first_line + np.arange(len(seps), dtype=np.int64)
        return Block(path, buf, starts, ends, lines, fields)
  return _split_block_general(path, buf, first_line, delimiter, fields)


def _split_block_general(path: str, buf: np.ndarray, first_line: int, delimiter: bytes,
                         fields: tuple[str, ...]) -> Block:
  """Blank lines skipped; the first malformed line raises naming its line number."""
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


def factorize_ints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(codes int64, sorted unique values) with vocab[codes] == values, without an argsort."""
  if not len(values):
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  lo, hi = int(values.min()), int(values.max())
  if hi - lo < max(4 * len(values), 1 << 20) and hi - lo < 1 << 27:
    present = np.zeros(hi - lo + 1, dtype=bool)
    present[values - lo] = True
    code_of = np.cumsum(present, dtype=np.int64) - 1
    return code_of[values - lo], np.flatnonzero(present).astype(np.int64) + lo
  vocab = np.unique(values)
  return np.searchsorted(vocab, values).astype(np.int64), vocab


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
