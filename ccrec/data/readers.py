"""Readers for the file formats session-recommendation researchers have.

Each returns a `ClickLog` (one row per click, file order kept). Layouts:

- RecBole atomic `.inter`: tab-separated, typed header
  `user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float`.
- MovieLens `u.data`: tab-separated `user item rating timestamp`, no header.
- Diginetica `train-item-views.csv`: `;`-separated, header
  `sessionId;userId;itemId;timeframe;eventdate`; clicks ordered by timeframe,
  a session's time is its eventdate (as SR-GNN's preprocess.py does).
- Yoochoose `yoochoose-clicks.dat`: no header, `SessionID,Timestamp,ItemID,Category`,
  ISO-8601 timestamps.
- RetailRocket `events.csv`: header `timestamp,visitorid,event,itemid,transactionid`,
  ms timestamps; a session is a visitor's events split at `gap_minutes` of inactivity.
- Tmall IJCAI-15 `user_log_format1.csv`: header
  `user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type`, time_stamp
  MMDD of 2015; a session is one user's events of one day (file order within it).
- Generic CSV/TSV with named session (or user), item and optional time columns.

Text is UTF-8 unless `encoding` is given (RecBole and generic files, whose ids
may be words); ids are kept byte for byte, never normalised. Errors name the
file, line and field (see delimited.py). Dates must exist in the calendar. A
last line without a line break (a file cut off mid-line) is read with a
warning, or refused with `strict=True`.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ccrec.data import delimited, numeric
from ccrec.data.errors import DataError, at
from ccrec.data.recipes import ClickLog

_MS = 1e-3


def sha256_file(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def _source(path, fmt: str) -> list:
  return [
      {
          "path": os.path.abspath(path),
          "sha256": sha256_file(path),
          "format": fmt,
          "size": os.path.getsize(path),
      }
  ]


def _header_fields(path, delimiter: str, encoding: str = "utf-8") -> list[str]:
  header = delimited.read_header(path, encoding)
  return [f.strip().strip('"') for f in header.split(delimiter)]


def _expect_header(path, delimiter: str, expected: tuple[str, ...]) -> None:
  got = _header_fields(path, delimiter)
  if tuple(got) != expected:
    raise DataError(
        f"{at(path, 1)}: expected the header {delimiter.join(expected)!r}, "
        f"got {delimiter.join(got)!r}"
    )


def _read(
    path,
    delimiter: str,
    fields: tuple[str, ...],
    skip_lines: int,
    columns: dict,
    encoding: str = "utf-8",
    strict: bool = False,
):
  """Parses the named columns block by block: {field: kind} -> {field: array}.

  kinds: 'int', 'float', 'token' (-> (codes, vocab)), 'datetime', 'line' (the
  1-based line number of each row; the field name is only a key).
  """
  parts: dict[str, list] = {f: [] for f in columns}
  for block in delimited.blocks(
      path, delimiter, fields, skip_lines=skip_lines, encoding=encoding, strict=strict
  ):
    for field, kind in columns.items():
      if kind == "line":
        parts[field].append(block.lines)
      else:
        parts[field].append(
            {
                "int": block.ints,
                "float": block.floats,
                "token": block.tokens,
                "datetime": block.datetimes,
            }[kind](field)
        )
  out = {}
  for field, kind in columns.items():
    if kind == "token":
      out[field] = delimited.merge_tokens(parts[field])
    else:
      out[field] = np.concatenate(parts[field]) if parts[field] else np.zeros(0)
  return out


def _log(path, fmt, session, items, time, order=None) -> ClickLog:
  codes, vocab = items
  if len(codes) == 0:
    empty = not os.fspath(path).endswith(".gz") and os.path.getsize(path) == 0
    raise DataError(f"{path}: {'the file is empty' if empty else 'no data rows'}")
  return ClickLog(
      session=np.asarray(session, np.int64),
      item=codes,
      time=np.asarray(time, np.float64),
      item_vocab=vocab,
      sources=_source(path, fmt),
      order=order,
  )


def read_inter(
    path,
    *,
    session_field: str | None = None,
    item_field: str = "item_id",
    time_field: str | None = "timestamp",
    encoding: str = "utf-8",
    strict: bool = False,
) -> ClickLog:
  """RecBole atomic .inter file. session_field defaults to session_id, else user_id."""
  header = _header_fields(path, "\t", encoding)
  names = []
  for name in header:
    if ":" not in name:
      raise DataError(
          f"{at(path, 1, name)}: a RecBole header field is name:type "
          f"(e.g. item_id:token); is this a tab-separated .inter file?"
      )
    names.append(name.split(":", 1)[0])
  if session_field is None:
    session_field = "session_id" if "session_id" in names else "user_id"
  for field in (session_field, item_field) + ((time_field,) if time_field else ()):
    if field not in names:
      raise DataError(f"{at(path, 1, field)}: no such column in the header {names}")
  columns = {session_field: "token", item_field: "token"}
  if time_field:
    columns[time_field] = "float"
  cols = _read(path, "\t", tuple(names), 1, columns, encoding, strict)
  session = cols[session_field][0]
  time = cols[time_field] if time_field else np.arange(len(session), dtype=np.float64)
  return _log(path, "recbole-inter", session, cols[item_field], time)


def read_udata(path, *, strict: bool = False) -> ClickLog:
  """MovieLens u.data: `user item rating timestamp`, tab-separated, no header."""
  cols = _read(
      path,
      "\t",
      ("user", "item", "rating", "timestamp"),
      0,
      {"user": "token", "item": "token", "timestamp": "int"},
      strict=strict,
  )
  return _log(path, "movielens-udata", cols["user"][0], cols["item"], cols["timestamp"])


DIGINETICA_HEADER = ("sessionId", "userId", "itemId", "timeframe", "eventdate")


def read_diginetica(path, *, strict: bool = False) -> ClickLog:
  """Diginetica train-item-views.csv (CIKM Cup 2016)."""
  _expect_header(path, ";", DIGINETICA_HEADER)
  cols = _read(
      path,
      ";",
      DIGINETICA_HEADER,
      1,
      {"sessionId": "int", "itemId": "token", "timeframe": "int", "eventdate": "datetime"},
      strict=strict,
  )
  return _log(
      path,
      "diginetica",
      cols["sessionId"],
      cols["itemId"],
      cols["eventdate"],
      order=cols["timeframe"],
  )


YOOCHOOSE_FIELDS = ("SessionID", "Timestamp", "ItemID", "Category")


def read_yoochoose(path, *, strict: bool = False) -> ClickLog:
  """Yoochoose yoochoose-clicks.dat (RecSys Challenge 2015)."""
  cols = _read(
      path,
      ",",
      YOOCHOOSE_FIELDS,
      0,
      {"SessionID": "int", "Timestamp": "datetime", "ItemID": "token"},
      strict=strict,
  )
  return _log(path, "yoochoose", cols["SessionID"], cols["ItemID"], cols["Timestamp"])


RETAILROCKET_HEADER = ("timestamp", "visitorid", "event", "itemid", "transactionid")


def read_retailrocket(
    path, *, gap_minutes: float = 30.0, events: tuple[str, ...] | None = None, strict: bool = False
) -> ClickLog:
  """RetailRocket events.csv; sessions split at `gap_minutes` of inactivity.

  `events` keeps only those event types (view, addtocart, transaction); None = all.
  """
  if gap_minutes <= 0:
    raise DataError(f"setting gap_minutes must be > 0, got {gap_minutes}")
  _expect_header(path, ",", RETAILROCKET_HEADER)
  cols = _read(
      path,
      ",",
      RETAILROCKET_HEADER,
      1,
      {"timestamp": "int", "visitorid": "int", "event": "token", "itemid": "token"},
      strict=strict,
  )
  time = cols["timestamp"] * _MS
  visitor = cols["visitorid"]
  codes, vocab = cols["itemid"]
  if events is not None:
    ev_codes, ev_vocab = cols["event"]
    unknown = set(events) - set(ev_vocab.astype(str).tolist())
    if unknown:
      raise DataError(
          f"{path}: setting events={events}: no events of type {sorted(unknown)} "
          f"(present: {sorted(ev_vocab.astype(str).tolist())})"
      )
    keep = np.isin(ev_vocab.astype(str)[ev_codes], list(events))
    time, visitor, codes = time[keep], visitor[keep], codes[keep]
  rows = np.lexsort((np.arange(len(time)), time, visitor))
  time, visitor, codes = time[rows], visitor[rows], codes[rows]
  new = np.ones(len(time), dtype=bool)
  new[1:] = (visitor[1:] != visitor[:-1]) | (np.diff(time) > gap_minutes * 60.0)
  log = _log(path, "retailrocket", np.cumsum(new) - 1, (codes, vocab), time)
  return log


TMALL_HEADER = (
    "user_id",
    "item_id",
    "cat_id",
    "seller_id",
    "brand_id",
    "time_stamp",
    "action_type",
)


def read_tmall(
    path, *, actions: tuple[int, ...] | None = None, year: int = 2015, strict: bool = False
) -> ClickLog:
  """Tmall IJCAI-15 user_log_format1.csv; session = one user's events of one day.

  `actions` keeps those action types (0 click, 1 add-to-cart, 2 purchase,
  3 favourite); None = all.
  """
  _expect_header(path, ",", TMALL_HEADER)
  cols = _read(
      path,
      ",",
      TMALL_HEADER,
      1,
      {
          "user_id": "int",
          "item_id": "token",
          "time_stamp": "int",
          "action_type": "int",
          "line": "line",
      },
      strict=strict,
  )
  mmdd = cols["time_stamp"]
  month, day = mmdd // 100, mmdd % 100
  bad = (mmdd < 0) | (day < 1) | (day > numeric.days_in_month(np.full_like(month, year), month))
  if bad.any():
    row = int(np.flatnonzero(bad)[0])
    raise DataError(
        f"{at(path, int(cols['line'][row]), 'time_stamp')}: expected a date MMDD "
        f"of {year}, got {int(mmdd[row])}"
    )
  days = numeric.days_from_civil(np.full_like(month, year), month, day)
  codes, vocab = cols["item_id"]
  user = cols["user_id"]
  keep = np.ones(len(user), dtype=bool)
  if actions is not None:
    keep = np.isin(cols["action_type"], list(actions))
  session = user[keep] * 1232 + (month[keep] * 100 + day[keep])
  return _log(path, "tmall", session, (codes[keep], vocab), days[keep] * 86400.0)


def sniff_delimiter(path, encoding: str = "utf-8") -> str:
  header = delimited.read_header(path, encoding)
  counts = {d: header.count(d) for d in ("\t", ",", ";", "|")}
  best = max(counts, key=counts.get)
  if counts[best] == 0:
    raise DataError(
        f"{at(path, 1)}: cannot tell the delimiter (no tab, comma, semicolon or pipe "
        f"in the header {header!r}); pass delimiter="
    )
  return best


def read_generic(
    path,
    *,
    session_field: str,
    item_field: str,
    time_field: str | None = None,
    time_format: str = "seconds",
    delimiter: str | None = None,
    encoding: str = "utf-8",
    strict: bool = False,
) -> ClickLog:
  """A CSV/TSV with a header naming a session (or user) column, an item column and
  optionally a time column; time_format 'seconds', 'ms' or 'iso'. No time: file order.
  `encoding`: the text encoding (ASCII-compatible, e.g. 'latin-1'; default UTF-8)."""
  if time_format not in ("seconds", "ms", "iso"):
    raise DataError(f"setting time_format must be 'seconds', 'ms' or 'iso', got {time_format!r}")
  delimiter = delimiter or sniff_delimiter(path, encoding)
  names = _header_fields(path, delimiter, encoding)
  for field in (session_field, item_field) + ((time_field,) if time_field else ()):
    if field not in names:
      raise DataError(f"{at(path, 1, field)}: no such column in the header {names}")
  columns = {session_field: "token", item_field: "token"}
  if time_field:
    columns[time_field] = "datetime" if time_format == "iso" else "float"
  cols = _read(path, delimiter, tuple(names), 1, columns, encoding, strict)
  session = cols[session_field][0]
  if time_field:
    time = cols[time_field] * (_MS if time_format == "ms" else 1.0)
  else:
    time = np.arange(len(session), dtype=np.float64)
  return _log(path, "generic", session, cols[item_field], time)
