"""Vectorised parsing of text fields: integers, decimals, ISO-8601 times, id factorisation.

Each parser takes the bytes of a block (uint8 [B]) and the field spans
(s, e: int64 [R], field r is buf[s[r]:e[r]]) and returns (values, ok) so that
the caller can name the first bad line. Digits are accumulated one column at
a time over contiguous arrays (a gather, a subtract, a multiply-add), which
keeps a 33M-row log to seconds without a compiled extension.

Text vocabularies stay fixed-width numpy arrays while that costs about the size of
their text, and become arrays of Python strings when one id is far longer than the
rest (`compact_text`), so their memory follows the file, not its longest id.
"""

from __future__ import annotations

import numpy as np

MAX_DIGITS = 18

_POW10 = 10 ** np.arange(MAX_DIGITS + 1, dtype=np.int64)


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
  """Unsigned integers, parsed one group of equal-width fields at a time (no masks)."""
  width = e - s
  ok = (width >= 1) & (width <= MAX_DIGITS)
  values = np.zeros(len(s), dtype=np.int64)
  if not len(s):
    return values, ok
  counts = np.bincount(np.clip(width, 0, MAX_DIGITS + 1), minlength=MAX_DIGITS + 2)
  for w in np.flatnonzero(counts[1 : MAX_DIGITS + 1]) + 1:
    rows = None if counts[w] == len(s) else np.flatnonzero(width == w)
    start = s if rows is None else s[rows]
    # Up to 9 digits fit int32, which halves the memory traffic of the passes.
    acc = np.zeros(len(start), dtype=np.int32 if w <= 9 else np.int64)
    top = np.zeros(len(start), dtype=np.uint8)
    for j in range(w):
      digit = _column_digits(buf, start + j)
      np.maximum(top, digit, out=top)  # non-digits wrap above 9
      acc *= 10
      acc += digit
    if rows is None:
      values[:] = acc
      ok &= top <= 9
    else:
      values[rows] = acc
      ok[rows] &= top <= 9
  return values, ok


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
  ok = (width >= 1) & (width <= MAX_DIGITS + 1)
  if not len(s):
    return np.zeros(0), ok
  w = int(np.clip(width.max(), 1, MAX_DIGITS + 1))
  chars, inside = _right_aligned(buf, s, np.minimum(e, s + w), w)
  is_dot = chars == 46
  digits = chars - np.uint8(48)
  is_digit = digits <= 9
  has_dot = is_dot.any(axis=1)
  ok &= (is_digit | is_dot).all(axis=1) & (is_dot.sum(axis=1) <= 1) & ~(has_dot & (width == 1))
  ok &= (is_digit & inside).sum(axis=1) <= MAX_DIGITS
  # Exponent of each digit column: the number of digit columns to its right.
  exponent = np.cumsum(is_digit[:, ::-1], axis=1)[:, ::-1] - 1
  mantissa = (
      np.where(is_digit & inside, digits, 0).astype(np.int64)
      * _POW10[np.clip(exponent, 0, MAX_DIGITS)]
  ).sum(axis=1)
  frac_digits = np.where(has_dot, w - 1 - np.argmax(is_dot, axis=1), 0)
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


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
  """int64: the days of each (proleptic Gregorian) month; 0 for a month outside 1..12."""
  year, month = np.asarray(year, np.int64), np.asarray(month, np.int64)
  leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
  valid = (month >= 1) & (month <= 12)
  return np.where(valid, _DAYS_IN_MONTH[np.where(valid, month, 0)] + (leap & (month == 2)), 0)


def _fixed(buf: np.ndarray, s: np.ndarray, lo: int, hi: int, ok: np.ndarray) -> np.ndarray:
  """int64 value of the digits at buf[s + lo : s + hi]; clears ok where one is not a digit."""
  value = np.zeros(len(s), dtype=np.int32)
  top = np.zeros(len(s), dtype=np.uint8)
  last = len(buf) - 1  # rows already failed may point past a short block's end
  for k in range(lo, hi):
    digit = _column_digits(buf, np.minimum(s + k, last))
    np.maximum(top, digit, out=top)
    value *= 10
    value += digit
  ok &= top <= 9
  return value.astype(np.int64)


def parse_iso(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """ISO-8601 dates/times in buf[s:e] as UTC unix seconds: (float64, ok bool).

  Accepted: YYYY-MM-DD, and YYYY-MM-DD(T| )HH:MM:SS with an optional .fraction and 'Z';
  the date must exist (no 2014-02-31). Fraction digits past MAX_DIGITS are checked, not added.
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
  ok &= (day >= 1) & (day <= days_in_month(year, month))
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
    for k in range(min(int(frac_len.max()), MAX_DIGITS)):
      on = k < frac_len
      digit = _column_digits(buf, np.where(on, rows + 20 + k, 0))
      tail_ok &= ~on | (digit <= 9)
      frac += np.where(on, digit * 10.0 ** -(k + 1), 0.0)
    long = np.flatnonzero(frac_len > MAX_DIGITS)
    if len(long):  # digits beyond float precision: checked with one pass over the buffer
      non_digits = np.flatnonzero((buf < 48) | (buf > 57))
      tail = rows[long] + 20 + MAX_DIGITS
      tail_ok[long] &= np.searchsorted(non_digits, tail) == np.searchsorted(
          non_digits, tail + frac_len[long] - MAX_DIGITS
      )
  ok &= ~has_time | (time_ok & tail_ok)
  seconds += np.where(has_time, hour * 3600 + minute * 60 + sec + frac, 0.0)
  return seconds, ok


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


def _text_size(vocab: np.ndarray) -> tuple[int, int]:
  """(characters in all of `vocab`'s strings, the longest string's length)."""
  if not len(vocab):
    return 0, 0
  lengths = (
      np.char.str_len(vocab)
      if vocab.dtype.kind == "U"
      else np.fromiter(map(len, vocab), np.int64, len(vocab))
  )
  return int(lengths.sum()), int(lengths.max())


def _fixed_width_fits(count: int, chars: int, longest: int) -> bool:
  """Whether `count` strings of `chars` characters in all fit a fixed-width array of about
  4x their size (one long id among many short ones would not)."""
  return count * longest <= 4 * chars + (1 << 16)


def compact_text(vocab: np.ndarray) -> np.ndarray:
  """str [U] as a fixed-width numpy array when that costs about the text's size, else as
  Python strings (object dtype)."""
  if _fixed_width_fits(len(vocab), *_text_size(vocab)):
    return vocab if vocab.dtype.kind == "U" else vocab.astype(str)
  return vocab if vocab.dtype == object else vocab.astype(object)


def concatenate_text(parts: list[np.ndarray]) -> np.ndarray:
  """One str array of `parts` (fixed-width or object), no wider than `compact_text` allows."""
  sizes = [_text_size(p) for p in parts]
  if all(p.dtype.kind == "U" for p in parts) and _fixed_width_fits(
      sum(len(p) for p in parts), sum(c for c, _ in sizes), max(w for _, w in sizes)
  ):
    return np.concatenate(parts)
  return np.concatenate([p.astype(object) for p in parts])
