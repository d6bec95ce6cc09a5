"""Vectorised parsing of delimited text (CSV/TSV click logs) with numpy alone.

Click logs run to tens of millions of rows (Yoochoose: 33M), too many for the
csv module, and pandas is not a dependency. The file is read in blocks of
whole lines; each block is a uint8 array in which newlines and delimiters are
found with numpy, every line is checked to have the expected number of fields,
and columns are parsed by vectorised digit arithmetic. Quoted fields holding
the delimiter are not supported (no click-log format uses them).

Ids are kept byte for byte: text must decode strictly (UTF-8 unless an
`encoding` is given), and an id with leading or trailing whitespace is an
error rather than a silently different item. Every error names the file, the
1-based line and the field.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import os
import re
import zlib
from typing import Iterator

import numpy as np

from ccrec.data.errors import DataError, at
from ccrec.data.numeric import MAX_DIGITS, factorize_ints, parse_decimals, parse_ints, parse_iso

_BLOCK_BYTES = 1 << 24  # 16 MiB of whole lines per block (column passes stay in cache)
_WHITESPACE = np.array([9, 10, 11, 12, 13, 32], dtype=np.uint8)
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
_DELIMITER_NAMES = {b"\t": "tab", b",": "comma", b";": "semicolon", b" ": "space", b"|": "pipe"}


def open_binary(path: str | os.PathLike):
  """The file at `path` opened for binary reading (.gz decompressed)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found")
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _gzip_error(path, e: Exception) -> DataError:
  return DataError(f"{path}: corrupt gzip data ({e}); is the file truncated (an interrupted "
                   "download?) or not gzip-compressed despite its .gz name?")


_STRUCTURE = ",;\t|\n\r -0123456789"  # bytes the splitter and number parsers look for


def check_encoding(encoding: str) -> None:
  """Known, and ASCII-compatible: fields are split on raw bytes (no UTF-16/32, no EBCDIC)."""
  try:
    encoded = _STRUCTURE.encode(codecs.lookup(encoding).name)
  except (LookupError, TypeError):
    raise DataError(f"setting encoding: unknown text encoding {encoding!r}") from None
  if encoded.removeprefix(codecs.BOM_UTF8) != _STRUCTURE.encode("ascii"):
    raise DataError(f"setting encoding: {encoding!r} is not ASCII-compatible (delimiters, "
                    "digits and newlines must be single ASCII bytes); convert the file to "
                    "UTF-8 first (e.g. iconv -f ENCODING -t UTF-8)")


def read_header(path: str | os.PathLike, encoding: str = "utf-8") -> str:
  """The first line of the file, without its line terminator."""
  check_encoding(encoding)
  try:
    with open_binary(path) as f:
      line = f.readline()
  except _GZIP_ERRORS as e:
    raise _gzip_error(path, e) from None
  try:
    return line.decode(encoding).rstrip("\r\n").lstrip("\ufeff")
  except UnicodeDecodeError:
    raise DataError(f"{at(path, 1)}: header is not {encoding} text; pass the file's encoding "
                    "(reader option encoding=, launch/prepare_data.py --encoding)") from None


@dataclasses.dataclass
class Block:
  """Rows of one block of a delimited file: field j of row r is buf[starts[r, j]:ends[r, j]]."""

  path: str
  buf: np.ndarray  # uint8
  starts: np.ndarray  # int64 [R, K]
  ends: np.ndarray  # int64 [R, K]
  lines: np.ndarray  # int64 [R], 1-based line numbers in the file
  fields: tuple[str, ...]
  encoding: str = "utf-8"
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
    return bytes(self.buf[s[row]:e[row]]).decode(self.encoding, errors="replace")

  def _fail(self, bad: np.ndarray, field: str, what: str) -> None:
    row = int(np.flatnonzero(bad)[0])
    raise DataError(f"{at(self.path, int(self.lines[row]), field)}: expected {what}, "
                    f"got {self.text(row, field)!r}")

  def ints(self, field: str) -> np.ndarray:
    """int64 [R]: the field as a (signed) decimal integer."""
    s, e = self._span(field)
    values, ok = parse_ints(self.buf, s, e)
    if not ok.all():
      row = int(np.flatnonzero(~ok)[0])
      text = self.text(row, field)
      if re.fullmatch(r"-?[0-9]+", text):
        raise DataError(f"{at(self.path, int(self.lines[row]), field)}: integer {text} is out of "
                        f"range (at most {MAX_DIGITS} digits)")
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
    zeros, no -0), else str: distinct spellings stay distinct ids.
    """
    s, e = self._span(field)
    if (e <= s).any():
      self._fail(e <= s, field, "a non-empty id")
    values, ok = parse_ints(self.buf, s, e)
    last = len(self.buf) - 1
    neg = self.buf[np.minimum(s, last)] == 45
    leading_zero = (self.buf[np.minimum(s + neg, last)] == 48) & ((e - s - neg > 1) | neg)
    if ok.all() and not leading_zero.any():
      return factorize_ints(values)
    padded = np.isin(self.buf[np.minimum(s, last)], _WHITESPACE) | np.isin(self.buf[e - 1],
                                                                          _WHITESPACE)
    if padded.any():
      row = int(np.flatnonzero(padded)[0])
      raise DataError(f"{at(self.path, int(self.lines[row]), field)}: id "
                      f"{self.text(row, field)!r} has leading or trailing whitespace; ids are "
                      "compared exactly (' 42', '42' and '42 ' would be three items), so remove "
                      "the spaces from the file")
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
    return codes.astype(np.int64), self._decode(vocab, codes.astype(np.int64), field)

  def _decode(self, vocab: np.ndarray, codes: np.ndarray, field: str) -> np.ndarray:
    """str [U]: the byte-string vocab decoded strictly; a bad id names its first line."""
    try:
      text = np.char.decode(vocab, self.encoding).astype(str)
    except UnicodeDecodeError:
      bad = [k for k, raw in enumerate(vocab.tolist()) if not _decodes(raw, self.encoding)]
      row = int(np.flatnonzero(np.isin(codes, bad))[0])
      raw = bytes(vocab[codes[row]])
      raise DataError(f"{at(self.path, int(self.lines[row]), field)}: not valid {self.encoding} "
                      f"text: {raw!r}; pass the file's encoding (reader option "
                      "encoding='latin-1', launch/prepare_data.py --encoding=latin-1)") from None
    if len(np.unique(text)) != len(text):  # a non-injective codec would merge distinct ids
      raise DataError(f"{self.path}, field {field!r}: distinct ids decode to the same text "
                      f"with encoding {self.encoding!r}; use another encoding")
    return text

  def datetimes(self, field: str) -> np.ndarray:
    """float64 [R] unix seconds (UTC) from 'YYYY-MM-DD' or 'YYYY-MM-DDTHH:MM:SS[.fff][Z]'."""
    s, e = self._span(field)
    seconds, ok = parse_iso(self.buf, s, e)
    if not ok.all():
      self._fail(~ok, field, "a date YYYY-MM-DD or time YYYY-MM-DDTHH:MM:SS[.fff][Z]")
    return seconds


def _decodes(raw: bytes, encoding: str) -> bool:
  try:
    raw.decode(encoding)
  except UnicodeDecodeError:
    return False
  return True


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
           skip_lines: int = 0, block_bytes: int = _BLOCK_BYTES,
           encoding: str = "utf-8") -> Iterator[Block]:
  """The data rows of a delimited file, a block of whole lines at a time."""
  path = os.fspath(path)
  delim = delimiter.encode()
  if len(delim) != 1:
    raise DataError(f"{path}: delimiter must be one byte, got {delimiter!r}")
  check_encoding(encoding)
  try:
    yield from _blocks(path, delim, fields, skip_lines, block_bytes, encoding)
  except _GZIP_ERRORS as e:
    raise _gzip_error(path, e) from None


def _blocks(path: str, delim: bytes, fields: tuple[str, ...], skip_lines: int, block_bytes: int,
            encoding: str) -> Iterator[Block]:
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
      block.encoding = encoding
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
