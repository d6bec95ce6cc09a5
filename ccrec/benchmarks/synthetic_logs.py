"""Raw synthetic click logs in the Yoochoose layout, for preprocessing benchmarks.

`yoochoose_like_log` draws sessions with `synthetic.synthetic_sessions`
(power-law popularity + sparse transitions), gives each session a start time
over `days` days (session ids increase with start time, as in the real file)
and its clicks exponential gaps; `write_yoochoose` writes them as
`SessionID,Timestamp,ItemID,Category` lines with ISO-8601 millisecond
timestamps, formatting digits with numpy (no per-line Python), a block of
lines at a time.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ccrec import atomic
from ccrec.data.synthetic import synthetic_sessions

START = 1396310400.0  # 2014-04-01T00:00:00Z, Yoochoose's first day
ITEM_BASE = 214_000_000  # Yoochoose item ids are 9-digit numbers like 214536502


@dataclasses.dataclass
class RawLog:
  session: np.ndarray  # int64 [N], 1-based, non-decreasing
  time_ms: np.ndarray  # int64 [N] unix milliseconds
  item: np.ndarray  # int64 [N] raw 9-digit item ids


def yoochoose_like_log(
    num_sessions: int = 9_000_000,
    num_items: int = 50_000,
    *,
    mean_length: float = 3.67,
    days: float = 183.0,
    seed: int = 0,
) -> RawLog:
  """About num_sessions * mean_length clicks (Yoochoose: 9.2M sessions, 33M clicks, 52.7k items)."""
  seqs = synthetic_sessions(
      num_items, num_sessions, seed=seed, mean_length=mean_length, min_length=1, max_length=200
  )
  rng = np.random.default_rng([seed, 2])
  starts = np.sort(rng.random(num_sessions)) * days * 86400e3 + START * 1e3
  lens = seqs.lengths()
  sid = np.repeat(np.arange(num_sessions), lens)
  gaps = rng.exponential(60e3, len(seqs.items))
  gaps[seqs.offsets[:-1]] = 0.0
  # Cumulative gap within each session: global cumsum minus its value at the session start.
  total = np.cumsum(gaps)
  within = total - total[seqs.offsets[:-1]][sid]
  time_ms = (starts[sid] + within).astype(np.int64)
  item = ITEM_BASE + seqs.items.astype(np.int64) * 7
  return RawLog(sid.astype(np.int64) + 1, time_ms, item)


def _digits(value: np.ndarray, width: np.ndarray, buf: np.ndarray, end: np.ndarray) -> None:
  """Writes value (int64) right-aligned so that its last digit is at buf[end - 1]."""
  for k in range(int(width.max(initial=0))):
    on = k < width
    buf[(end - 1 - k)[on]] = 48 + (value[on] // 10**k) % 10


def _civil(days: np.ndarray):
  """(year, month, day) from days since 1970-01-01 (H. Hinnant's civil_from_days)."""
  z = days + 719468
  era = np.floor_divide(z, 146097)
  doe = z - era * 146097
  yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  mp = (5 * doy + 2) // 153
  d = doy - (153 * mp + 2) // 5 + 1
  m = mp + np.where(mp < 10, 3, -9)
  return yoe + era * 400 + (m <= 2), m, d


def format_yoochoose(log: RawLog, lo: int, hi: int) -> bytes:
  """Lines lo..hi-1 as 'SessionID,YYYY-MM-DDTHH:MM:SS.fffZ,ItemID,0\\n' bytes."""
  session, time_ms, item = log.session[lo:hi], log.time_ms[lo:hi], log.item[lo:hi]
  sid_width = np.floor(np.log10(np.maximum(session, 1))).astype(np.int64) + 1
  item_width = np.floor(np.log10(np.maximum(item, 1))).astype(np.int64) + 1
  length = sid_width + 1 + 24 + 1 + item_width + 2 + 1
  ends = np.cumsum(length)
  starts = ends - length
  buf = np.zeros(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
  _digits(session, sid_width, buf, starts + sid_width)
  t = starts + sid_width + 1  # timestamp start
  seconds, ms = np.divmod(time_ms, 1000)
  days, sec_of_day = np.divmod(seconds, 86400)
  year, month, day = _civil(days)
  hour, rest = np.divmod(sec_of_day, 3600)
  minute, sec = np.divmod(rest, 60)
  two = np.full(len(t), 2)
  for offset, value, width in (
      (4, year, 4),
      (7, month, 2),
      (10, day, 2),
      (13, hour, 2),
      (16, minute, 2),
      (19, sec, 2),
      (23, ms, 3),
  ):
    _digits(value, np.full(len(t), width) if width != 2 else two, buf, t + offset)
  for offset, char in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z")):
    buf[t + offset] = ord(char)
  for at_, char in (
      (t - 1, ","),
      (t + 24, ","),
      (ends - 3, ","),
      (ends - 2, "0"),
      (ends - 1, "\n"),
  ):
    buf[at_] = ord(char)
  _digits(item, item_width, buf, t + 25 + item_width)
  return buf.tobytes()


def write_yoochoose(
    log: RawLog, path: str | os.PathLike, *, lines_per_block: int = 2_000_000
) -> None:
  """Writes the log as a yoochoose-clicks.dat file."""
  with atomic.writing(path, "wb") as f:
    for lo in range(0, len(log.session), lines_per_block):
      f.write(format_yoochoose(log, lo, min(lo + lines_per_block, len(log.session))))
