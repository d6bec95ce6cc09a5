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

Memory stays in proportion to the file whatever its longest field: text ids
are factorised one group of equal-width ids at a time, and an id longer than
MAX_ID_BYTES is refused. A last line without a line break, in a file whose
other lines have one, is read with a `DataWarning` naming the file (it may
have been cut off mid-line), or refused with `strict=True`.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import os
import re
import warnings
import zlib
from typing import Iterator

import numpy as np

from ccrec.data.errors import DataError, DataWarning, at
from ccrec.data.numeric import (
    MAX_DIGITS,
    compact_text,
    concatenate_text,
    factorize_ints,
    parse_decimals,
    parse_ints,
    parse_iso,
)

MAX_ID_BYTES = 4096  # longer ids are refused: no click log has them, a damaged file may
_GATHER_BYTES = 1 << 22  # id bytes gathered by one fancy index (its int64 index is 8x this)
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
  return DataError(
      f"{path}: corrupt gzip data ({e}); is the file truncated (an interrupted "
      "download?) or not gzip-compressed despite its .gz name?"
  )


_STRUCTURE = ",;\t|\n\r -0123456789"  # bytes the splitter and number parsers look for


def check_encoding(encoding: str) -> None:
  """Known, and ASCII-compatible: fields are split on raw bytes (no UTF-16/32, no EBCDIC)."""
  try:
    encoded = _STRUCTURE.encode(codecs.lookup(encoding).name)
  except (LookupError, TypeError):
    raise DataError(f"setting encoding: unknown text encoding {encoding!r}") from None
  if encoded.removeprefix(codecs.BOM_UTF8) != _STRUCTURE.encode("ascii"):
    raise DataError(
        f"setting encoding: {encoding!r} is not ASCII-compatible (delimiters, "
        "digits and newlines must be single ASCII bytes); convert the file to "
        "UTF-8 first (e.g. iconv -f ENCODING -t UTF-8)"
    )


def read_header(path: str | os.PathLike, encoding: str = "utf-8") -> str:
  """The first line of the file, without its line terminator."""
  check_encoding(encoding)
  try:
    with open_binary(path) as f:
      line = f.readline()
  except _GZIP_ERRORS as e:
    raise _gzip_error(path, e) from None
  if not line:
    raise DataError(f"{path}: the file is empty; expected a header line")
  try:
    return line.decode(encoding).rstrip("\r\n").lstrip("\ufeff")
  except UnicodeDecodeError:
    raise DataError(
        f"{at(path, 1)}: header is not {encoding} text; pass the file's encoding "
        "(reader option encoding=, launch/prepare_data.py --encoding)"
    ) from None


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
      quoted = (
          (e - s >= 2)
          & (self.buf[np.minimum(s, len(self.buf) - 1)] == 34)
          & (self.buf[np.maximum(e - 1, 0)] == 34)
      )
      if quoted.any():
        s, e = s + quoted, e - quoted
    return s, e

  def text(self, row: int, field: str) -> str:
    s, e = self._span(field)
    return bytes(self.buf[s[row] : e[row]]).decode(self.encoding, errors="replace")

  def _fail(self, bad: np.ndarray, field: str, what: str) -> None:
    row = int(np.flatnonzero(bad)[0])
    raise DataError(
        f"{at(self.path, int(self.lines[row]), field)}: expected {what}, "
        f"got {_excerpt(self.text(row, field))}"
    )

  def ints(self, field: str) -> np.ndarray:
    """int64 [R]: the field as a (signed) decimal integer."""
    s, e = self._span(field)
    values, ok = parse_ints(self.buf, s, e)
    if not ok.all():
      row = int(np.flatnonzero(~ok)[0])
      text = self.text(row, field)
      if re.fullmatch(r"-?[0-9]+", text):
        raise DataError(
            f"{at(self.path, int(self.lines[row]), field)}: integer {text} is out of "
            f"range (at most {MAX_DIGITS} digits)"
        )
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
    zeros, no -0), else str (see numeric.compact_text): distinct spellings stay
    distinct ids.
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
    padded = np.isin(self.buf[np.minimum(s, last)], _WHITESPACE) | np.isin(
        self.buf[e - 1], _WHITESPACE
    )
    if padded.any():
      row = int(np.flatnonzero(padded)[0])
      raise DataError(
          f"{at(self.path, int(self.lines[row]), field)}: id "
          f"{_excerpt(self.text(row, field))} has leading or trailing whitespace; ids "
          "are compared exactly (' 42', '42' and '42 ' would be three items), so "
          "remove the spaces from the file"
      )
    width = e - s
    if (width > MAX_ID_BYTES).any():
      row = int(np.flatnonzero(width > MAX_ID_BYTES)[0])
      raise DataError(
          f"{at(self.path, int(self.lines[row]), field)}: an id of "
          f"{int(width[row]):,} bytes, longer than any id ({MAX_ID_BYTES:,} bytes at "
          f"most; is a delimiter or line break missing?): "
          f"{_excerpt(self.text(row, field))}"
      )
    nul = np.flatnonzero(self.buf == 0)
    if len(nul):
      has_nul = np.searchsorted(nul, s) < np.searchsorted(nul, e)
      if has_nul.any():
        self._fail(has_nul, field, "an id without NUL bytes")
    return self._factorize_text(s, width, field)

  def _factorize_text(
      self, s: np.ndarray, width: np.ndarray, field: str
  ) -> tuple[np.ndarray, np.ndarray]:
    """(codes int64 [R], sorted str vocab [U]) of text ids, one width at a time.

    Ids of one width are compared as fixed-width byte strings, so no array is as
    wide as the longest id times the number of rows. A bad id names its first line.
    """
    order = np.argsort(width, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(width[order])) + 1)
    codes = np.empty(len(s), np.int64)
    texts, undecodable, offset = [], [], 0
    for rows in groups:
      w = int(width[rows[0]])
      raw = np.ascontiguousarray(self._gather(s[rows], w)).view(f"S{w}").ravel()
      vocab, inverse = np.unique(raw, return_inverse=True)
      inverse = inverse.ravel()
      codes[rows] = inverse + offset
      offset += len(vocab)
      try:
        texts.append(np.char.decode(vocab, self.encoding).astype(str))
      except UnicodeDecodeError:
        bad = [k for k, r in enumerate(vocab.tolist()) if not _decodes(r, self.encoding)]
        undecodable.append(int(rows[np.flatnonzero(np.isin(inverse, bad))[0]]))
    if undecodable:
      row = min(undecodable)
      raw = bytes(self.buf[s[row] : s[row] + width[row]])
      raise DataError(
          f"{at(self.path, int(self.lines[row]), field)}: not valid {self.encoding} "
          f"text: {raw[:100]!r}; pass the file's encoding (reader option "
          "encoding='latin-1', launch/prepare_data.py --encoding=latin-1)"
      )
    text = texts[0] if len(texts) == 1 else concatenate_text(texts)
    rank = np.argsort(text, kind="stable")
    text = text[rank]
    if len(text) > 1 and (text[1:] == text[:-1]).any():  # a non-injective codec merged ids
      raise DataError(
          f"{self.path}, field {field!r}: distinct ids decode to the same text "
          f"with encoding {self.encoding!r}; use another encoding"
      )
    code_of = np.empty(len(rank), np.int64)
    code_of[rank] = np.arange(len(rank))
    return code_of[codes], compact_text(text)

  def _gather(self, starts: np.ndarray, w: int) -> np.ndarray:
    """uint8 [n, w]: buf[starts[i]:starts[i] + w] for each i."""
    if len(starts) * w <= _GATHER_BYTES:
      return self.buf[starts[:, None] + np.arange(w)]
    out = np.empty((len(starts), w), np.uint8)
    for j in range(w):  # a column at a time: no index array 8x the size of the ids
      out[:, j] = self.buf[starts + j]
    return out

  def datetimes(self, field: str) -> np.ndarray:
    """float64 [R] unix seconds (UTC) from 'YYYY-MM-DD' or 'YYYY-MM-DDTHH:MM:SS[.fff][Z]'."""
    s, e = self._span(field)
    seconds, ok = parse_iso(self.buf, s, e)
    if not ok.all():
      self._fail(~ok, field, "a date YYYY-MM-DD or time YYYY-MM-DDTHH:MM:SS[.fff][Z]")
    return seconds


def _excerpt(text: str, limit: int = 80) -> str:
  """repr of `text`, cut to its first `limit` characters."""
  if len(text) <= limit:
    return repr(text)
  return f"{text[:limit]!r}... ({len(text):,} characters)"


def _decodes(raw: bytes, encoding: str) -> bool:
  try:
    raw.decode(encoding)
  except UnicodeDecodeError:
    return False
  return True


def _split_block(
    path: str, buf: np.ndarray, first_line: int, delimiter: bytes, fields: tuple[str, ...]
) -> Block:
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


def _split_block_general(
    path: str, buf: np.ndarray, first_line: int, delimiter: bytes, fields: tuple[str, ...]
) -> Block:
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
    text = bytes(buf[line_starts[bad] : line_ends[bad]]).decode("utf-8", errors="replace")
    hint = ""
    if counts[bad] == 0:
      others = [
          name for d, name in _DELIMITER_NAMES.items() if d != delimiter and d.decode() in text
      ]
      if others:
        hint = f" (wrong delimiter? the line contains {' and '.join(others)})"
    raise DataError(
        f"{at(path, int(lines[bad]))}: expected {k} fields separated by "
        f"{_DELIMITER_NAMES.get(delimiter, repr(delimiter))}, "
        f"found {counts[bad] + 1}{hint}: {text[:200]!r}"
    )
  delim = delim.reshape(len(line_ends), k - 1)
  starts = np.concatenate([line_starts[:, None], delim + 1], axis=1)
  ends = np.concatenate([delim, line_ends[:, None]], axis=1)
  return Block(path, buf, starts, ends, lines, fields)


def blocks(
    path: str | os.PathLike,
    delimiter: str,
    fields: tuple[str, ...],
    *,
    skip_lines: int = 0,
    block_bytes: int = _BLOCK_BYTES,
    encoding: str = "utf-8",
    strict: bool = False,
) -> Iterator[Block]:
  """The data rows of a delimited file, a block of whole lines at a time.

  strict: a last line without a line break (see the module docstring) is an error,
  not a warning.
  """
  path = os.fspath(path)
  delim = delimiter.encode()
  if len(delim) != 1:
    raise DataError(f"{path}: delimiter must be one byte, got {delimiter!r}")
  check_encoding(encoding)
  try:
    yield from _blocks(path, delim, fields, skip_lines, block_bytes, encoding, strict)
  except _GZIP_ERRORS as e:
    raise _gzip_error(path, e) from None


def _blocks(
    path: str,
    delim: bytes,
    fields: tuple[str, ...],
    skip_lines: int,
    block_bytes: int,
    encoding: str,
    strict: bool,
) -> Iterator[Block]:
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
          last = line + data.count(b"\n")
          if last > 1:  # the lines before it end with a line break
            _unterminated(path, last, strict)
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


def _unterminated(path: str, line: int, strict: bool) -> None:
  """Warns (or, strict, raises) that the last line of `path` has no line break."""
  message = (
      f"{at(path, line)}: the last line has no line break, unlike the lines before it: "
      "the file may be cut off mid-line (an interrupted download or copy?)"
  )
  if strict:
    raise DataError(
        f"{message}; refused (strict). Complete or re-fetch the file, or add the "
        "line break if the line is whole"
    )
  warnings.warn(
      f"{message}; its last line was read as it stands (strict=True, "
      "launch/prepare_data.py --strict, refuses such a file)",
      DataWarning,
      stacklevel=2,
  )


def merge_tokens(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Concatenates per-block (codes, vocab) into one (codes, vocab) with a shared vocab."""
  if not parts:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  vocabs = [v for _, v in parts]
  if all(v.dtype.kind == "i" for v in vocabs):
    vocab = np.unique(np.concatenate(vocabs))
  else:
    vocabs = [v.astype(str) if v.dtype.kind == "i" else v for v in vocabs]
    vocab = np.unique(concatenate_text(vocabs))
    if vocab.dtype == object:
      vocabs = [v.astype(object) for v in vocabs]
  codes = [np.searchsorted(vocab, v)[c] for (c, _), v in zip(parts, vocabs)]
  return np.concatenate(codes), vocab if vocab.dtype.kind == "i" else compact_text(vocab)
