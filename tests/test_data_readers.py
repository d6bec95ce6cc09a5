"""Tests for ccrec/data/readers.py and delimited.py on fixtures in the public layouts."""

import csv
import datetime
import json
import pathlib
import re
import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from ccrec.data import delimited, readers
from ccrec.data.errors import DataError, DataWarning

import helpers

FIX = pathlib.Path(__file__).parent / "fixtures"


def _rows(log):
  """[(session code, raw item str, time)] in row order."""
  rows = zip(log.session, log.item, log.time)
  return [(int(s), str(log.item_vocab[i]), float(t)) for s, i, t in rows]


def _csv(name, delimiter, header=True):
  with open(FIX / name, newline="") as f:
    rows = list(csv.reader(f, delimiter=delimiter))
  return rows[1:] if header else rows


def _utc(text, fmt):
  return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


def _same_grouping(codes, keys):
  """codes and raw keys define the same partition of rows."""
  pairs = set(zip(codes, keys))
  assert len(pairs) == len(set(codes)) == len(set(keys))


def test_inter_and_udata_agree_with_csv():
  ref = _csv("u.data", "\t", header=False)
  for path, read in (
      (FIX / "sample.inter", readers.read_inter),
      (FIX / "u.data", readers.read_udata),
  ):
    log = read(path)
    got = _rows(log)
    assert [(i, t) for _, i, t in got] == [(r[1], float(r[3])) for r in ref]
    _same_grouping(log.session.tolist(), [r[0] for r in ref])
    assert log.sources[0]["sha256"] == readers.sha256_file(path)


def test_diginetica():
  ref = _csv("train-item-views.csv", ";")
  log = readers.read_diginetica(FIX / "train-item-views.csv")
  assert log.session.tolist() == [int(r[0]) for r in ref]
  assert [str(v) for v in log.item_vocab[log.item]] == [r[2] for r in ref]
  assert log.order.tolist() == [int(r[3]) for r in ref]
  assert log.time.tolist() == [_utc(r[4], "%Y-%m-%d") for r in ref]


def test_yoochoose():
  ref = _csv("yoochoose-clicks.dat", ",", header=False)
  log = readers.read_yoochoose(FIX / "yoochoose-clicks.dat")
  assert log.session.tolist() == [int(r[0]) for r in ref]
  assert [str(v) for v in log.item_vocab[log.item]] == [r[2] for r in ref]
  want = [_utc(r[1], "%Y-%m-%dT%H:%M:%S.%fZ") for r in ref]
  np.testing.assert_allclose(log.time, want, atol=1e-6)


def test_retailrocket_sessions_split_at_inactivity():
  ref = sorted(((int(r[1]), int(r[0]), r[3], r[2]) for r in _csv("events.csv", ",")))
  want, last = [], None
  for visitor, ms, item, _ in ref:
    if last is None or visitor != last[0] or ms - last[1] > 30 * 60_000:
      want.append([])
    want[-1].append(item)
    last = (visitor, ms)
  log = readers.read_retailrocket(FIX / "events.csv")
  got = [[] for _ in range(log.session.max() + 1)]
  for s, i in zip(log.session, log.item):
    got[s].append(str(log.item_vocab[i]))
  assert got == want
  views = readers.read_retailrocket(FIX / "events.csv", events=("view",))
  assert len(views) == sum(r[3] == "view" for r in ref)
  one_per_visitor = readers.read_retailrocket(FIX / "events.csv", gap_minutes=1e9)
  assert len(np.unique(one_per_visitor.session)) == len({r[0] for r in ref})
  with pytest.raises(DataError, match="no events of type"):
    readers.read_retailrocket(FIX / "events.csv", events=("click",))


def test_tmall_sessions_are_user_days():
  ref = _csv("user_log_format1.csv", ",")
  log = readers.read_tmall(FIX / "user_log_format1.csv")
  _same_grouping(log.session.tolist(), [(r[0], r[5]) for r in ref])
  assert log.time[0] == _utc("2015-" + ref[0][5].zfill(4), "%Y-%m%d")
  clicks = readers.read_tmall(FIX / "user_log_format1.csv", actions=(0,))
  assert len(clicks) == sum(r[6] == "0" for r in ref)


def test_generic_with_string_ids():
  log = readers.read_generic(
      FIX / "generic.tsv", session_field="session", item_field="product", time_field="ts"
  )
  assert [(str(log.item_vocab[i]), t) for i, t in zip(log.item, log.time)] == [
      ("A", 10.5),
      ("B", 11.0),
      ("A", 9.0),
      ("C", 12.0),
      ("C", 12.25),
      ("B", 20.0),
  ]
  _same_grouping(log.session.tolist(), ["s1", "s1", "s2", "s2", "s1", "s3"])
  no_time = readers.read_generic(FIX / "generic.tsv", session_field="session", item_field="product")
  assert no_time.time.tolist() == list(range(6))


# Bad input: each error names the file and the line and field (or the setting).


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_missing_file():
  with pytest.raises(DataError, match="nope.inter: file not found"):
    readers.read_inter("nope.inter")


def test_wrong_delimiter(tmp_path):
  path = _write(tmp_path, "u.data", "1,2,3,4\n")
  with pytest.raises(DataError, match=r"u.data, line 1: expected 4 fields separated by tab.*comma"):
    readers.read_udata(path)


def test_malformed_row_names_line(tmp_path):
  header = "user_id:token\titem_id:token\ttimestamp:float\n"
  path = _write(tmp_path, "x.inter", header + "1\t2\t3\n\n1\t2\n")
  with pytest.raises(DataError, match=r"x.inter, line 4: expected 3 fields"):
    readers.read_inter(path)


def test_non_integer_id_names_line_and_field(tmp_path):
  path = _write(
      tmp_path,
      "yoochoose-clicks.dat",
      "1,2014-04-07T10:51:09.277Z,214536502,0\nabc,2014-04-07T10:51:09.277Z,2,0\n",
  )
  with pytest.raises(DataError, match=r"line 2, field 'SessionID': expected an integer, got 'abc'"):
    readers.read_yoochoose(path)


def test_bad_timestamp_names_line_and_field(tmp_path):
  path = _write(
      tmp_path, "yoochoose-clicks.dat", "1,2014-04-07T10:51:09.277Z,2,0\n1,2014-13-07T10:51,2,0\n"
  )
  with pytest.raises(DataError, match=r"line 2, field 'Timestamp'"):
    readers.read_yoochoose(path)
  path = _write(tmp_path, "x.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tsoon\n")
  with pytest.raises(DataError, match=r"line 2, field 'timestamp': expected a number, got 'soon'"):
    readers.read_inter(path)


def test_wrong_header(tmp_path):
  path = _write(
      tmp_path,
      "train-item-views.csv",
      "session;user;item;timeframe;eventdate\n1;NA;2;3;2016-01-01\n",
  )
  with pytest.raises(DataError, match=r"train-item-views.csv, line 1: expected the header"):
    readers.read_diginetica(path)
  path = _write(tmp_path, "y.inter", "user_id\titem_id\n1\t2\n")
  with pytest.raises(DataError, match=r"line 1, field 'user_id'"):
    readers.read_inter(path)
  path = _write(tmp_path, "g.csv", "a,b\n1,2\n")
  with pytest.raises(DataError, match=r"g.csv, line 1, field 'sess'"):
    readers.read_generic(path, session_field="sess", item_field="b")


@pytest.mark.parametrize(
    "name,read",
    [
        ("u.data", readers.read_udata),
        ("ml-100k.inter", readers.read_inter),
        ("train-item-views.csv", readers.read_diginetica),
        ("clicks.csv", lambda p: readers.read_generic(p, session_field="s", item_field="i")),
    ],
)
def test_empty_file_is_named_empty(tmp_path, name, read):
  path = _write(tmp_path, name, "")
  with pytest.raises(DataError, match=rf"{re.escape(name)}: the file is empty"):
    read(path)
  path = _write(tmp_path, name, "user_id:token\titem_id:token\ttimestamp:float\n")
  if name.endswith(".inter"):
    with pytest.raises(DataError, match="no data rows"):
      read(path)


def test_blocks_across_block_boundaries(tmp_path):
  """Tiny blocks (lines split across reads) parse exactly like one block; CRLF and gzip too."""
  text = (FIX / "train-item-views.csv").read_bytes()
  whole = list(
      delimited.blocks(FIX / "train-item-views.csv", ";", readers.DIGINETICA_HEADER, skip_lines=1)
  )
  small = list(
      delimited.blocks(
          FIX / "train-item-views.csv", ";", readers.DIGINETICA_HEADER, skip_lines=1, block_bytes=50
      )
  )
  assert len(small) > 10
  for field in ("sessionId", "timeframe"):
    np.testing.assert_array_equal(
        np.concatenate([b.ints(field) for b in small]),
        np.concatenate([b.ints(field) for b in whole]),
    )
  assert np.concatenate([b.lines for b in small]).tolist() == list(range(2, 2 + 127))
  crlf = _write(tmp_path, "train-item-views.csv", text.decode().replace("\n", "\r\n").rstrip("\n"))
  with pytest.warns(DataWarning, match=r"line 128: the last line has no line break"):
    np.testing.assert_array_equal(
        readers.read_diginetica(crlf).order,
        readers.read_diginetica(FIX / "train-item-views.csv").order,
    )
  import gzip

  gz = tmp_path / "train-item-views.csv.gz"
  gz.write_bytes(gzip.compress(text))
  np.testing.assert_array_equal(
      readers.read_diginetica(gz).item, readers.read_diginetica(FIX / "train-item-views.csv").item
  )


def _block(values):
  text = "\n".join(values) + "\n"
  path = "mem.csv"
  buf = np.frombuffer(text.encode(), np.uint8)
  return delimited._split_block(path, buf, 1, b",", ("x",))  # pylint: disable=protected-access


@hypothesis.settings(database=None, deadline=None)
@hypothesis.given(st.lists(st.integers(-(10**17), 10**17), min_size=1, max_size=50))
def test_ints_roundtrip(values):
  np.testing.assert_array_equal(_block([str(v) for v in values]).ints("x"), values)


@hypothesis.settings(database=None, deadline=None)
@hypothesis.given(
    st.lists(st.decimals(-(10**6), 10**6, places=3, allow_nan=False), min_size=1, max_size=50)
)
def test_decimals_roundtrip(values):
  got = _block([str(v) for v in values]).floats("x")
  np.testing.assert_allclose(got, [float(v) for v in values], rtol=1e-12, atol=1e-9)


_token = st.text(
    st.characters(codec="ascii", exclude_characters=',\n\r"\x00'), min_size=1, max_size=12
).filter(lambda t: t[0] not in " \t\v\f" and t[-1] not in " \t\v\f")


@hypothesis.settings(database=None, deadline=None)
@hypothesis.given(st.lists(_token, min_size=1, max_size=50))
def test_tokens_roundtrip(values):
  codes, vocab = _block(values).tokens("x")
  assert [str(vocab[c]) for c in codes] == values


def test_nul_in_id_is_an_error():
  with pytest.raises(DataError, match="line 2, field 'x': expected an id without NUL"):
    _block(["a", "b\x00"]).tokens("x")


@hypothesis.settings(database=None, deadline=None)
@hypothesis.given(
    st.lists(
        st.datetimes(datetime.datetime(1971, 1, 1), datetime.datetime(2099, 1, 1)),
        min_size=1,
        max_size=30,
    )
)
def test_iso_roundtrip(values):
  text = [v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z" for v in values]
  utc = datetime.timezone.utc
  want = [
      v.replace(microsecond=v.microsecond // 1000 * 1000, tzinfo=utc).timestamp() for v in values
  ]
  np.testing.assert_allclose(_block(text).datetimes("x"), want, atol=1e-6)


@hypothesis.settings(database=None, deadline=None)
@hypothesis.given(
    st.text(st.characters(codec="ascii", exclude_characters=",\n\r"), min_size=1, max_size=12)
)
def test_ints_never_silently_misparse(text):
  """An int field is either a plain decimal integer or an error naming line and field."""
  unquoted = text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
  if re.fullmatch(r"-?[0-9]{1,18}", unquoted) and unquoted != "-":
    assert _block([text]).ints("x").tolist() == [int(unquoted)]
  else:
    with pytest.raises(DataError, match="line 1, field 'x'"):
      _block([text]).ints("x")


def test_corrupt_gzip_names_the_file(tmp_path):
  import gzip

  text = (FIX / "train-item-views.csv").read_bytes()
  truncated = tmp_path / "train-item-views.csv.gz"
  truncated.write_bytes(gzip.compress(text)[:400])
  with pytest.raises(DataError, match=r"train-item-views.csv.gz: corrupt gzip data.*truncated"):
    readers.read_diginetica(truncated)
  plain = tmp_path / "clicks.csv.gz"
  plain.write_bytes(b"sid,item\ns1,1\ns1,2\n")
  with pytest.raises(DataError, match=r"clicks.csv.gz: corrupt gzip data.*not gzip-compressed"):
    readers.read_generic(plain, session_field="sid", item_field="item")


LATIN1 = "sid,item\ns1,caf\xe9\ns1,caf\xe8\ns2,th\xe9\ns2,tea\n".encode("latin-1")


def test_invalid_utf8_id_is_an_error_unless_encoding_given(tmp_path):
  path = tmp_path / "latin1.csv"
  path.write_bytes(LATIN1)
  message = r"latin1.csv, line 2, field 'item': not valid utf-8 text: b'caf\\xe9'.*encoding="
  with pytest.raises(DataError, match=message):
    readers.read_generic(path, session_field="sid", item_field="item")
  log = readers.read_generic(path, session_field="sid", item_field="item", encoding="latin-1")
  assert [str(log.item_vocab[i]) for i in log.item] == ["café", "cafè", "thé", "tea"]
  with pytest.raises(DataError, match="encoding"):
    readers.read_generic(path, session_field="sid", item_field="item", encoding="nope")
  for wide in ("utf-16", "utf-32", "cp037"):  # fields are split on raw ASCII bytes
    with pytest.raises(DataError, match="not ASCII-compatible"):
      readers.read_generic(path, session_field="sid", item_field="item", encoding=wide)
  from ccrec.data.delimited import check_encoding

  for fine in ("utf-8-sig", "latin-1", "cp1252", "ascii"):
    check_encoding(fine)


@pytest.mark.parametrize("line", ["s1, 42", "s1,42 ", 's1," 42"', "s1 ,42"])
def test_whitespace_around_an_id_is_an_error(tmp_path, line):
  path = _write(tmp_path, "ws.csv", f"sid,item\ns0,42\n{line}\n")
  with pytest.raises(DataError, match=r"ws.csv, line 3, field '(item|sid)': .*whitespace"):
    readers.read_generic(path, session_field="sid", item_field="item")


@pytest.mark.parametrize("values", [["0", "-0"], ["-5", "-05"], ["5", "05", "-05"]])
def test_distinct_integer_spellings_stay_distinct(values):
  codes, vocab = _block(values).tokens("x")
  assert [str(vocab[c]) for c in codes] == values


def test_integer_out_of_range_says_so():
  with pytest.raises(
      DataError, match=r"line 2, field 'x': integer 9223372036854775807 is out of " r"range"
  ):
    _block(["1", "9223372036854775807"]).ints("x")


def _ml100k_sized(tmp_path, item_id):
  """An .inter of ml-100k's size (100,000 rows) whose fifth row (line 6) has `item_id`."""
  n = 100_000
  rng = np.random.default_rng(0)
  rows = [
      f"{u}\t{i}\t3\t{880000000 + k}"
      for k, (u, i) in enumerate(
          zip(rng.integers(1, 944, n).tolist(), rng.integers(1, 1683, n).tolist())
      )
  ]
  rows[4] = f"7\t{item_id}\t3\t880000004"
  return _write(
      tmp_path,
      "ml-100k.inter",
      "user_id:token\titem_id:token\trating:float\t" "timestamp:float\n" + "\n".join(rows) + "\n",
  )


_READ_INTER = """
import json, sys
from ccrec.data import readers
from ccrec.data.errors import DataError
try:
  log = readers.read_inter(sys.argv[1])
except DataError as e:
  print(json.dumps({"error": str(e)}))
else:
  print(json.dumps({"rows": len(log.item), "longest": max(map(len, map(str, log.item_vocab)))}))
"""


@pytest.mark.parametrize("length", [3000, 10_000])
def test_one_long_id_costs_memory_in_proportion_to_the_file(tmp_path, length):
  # A [rows, longest id] index would take 100,000 x length x 8 bytes: far above the 1 GiB cap.
  path = _ml100k_sized(tmp_path, "x" * length)
  run = helpers.run_limited(_READ_INTER, memory_mib=1024, args=(path,))
  assert run.returncode == 0, run.stderr[-3000:]
  got = json.loads(run.stdout)
  if length <= delimited.MAX_ID_BYTES:
    assert got == {"rows": 100_000, "longest": length}
  else:
    assert re.match(
        r".*ml-100k.inter, line 6, field 'item_id': an id of 10,000 bytes, longer " r"than any id",
        got.get("error", ""),
    ), got


def test_long_ids_among_short_ones_read_exactly(tmp_path):
  ids = ["1", "22", "x" * 300, "22", "ab", "x" * 299, "é" * 50, "1"]
  rows = "".join(f"s{k % 3},{v}\n" for k, v in enumerate(ids))
  path = _write(tmp_path, "g.csv", "s,i\n" + rows)
  log = readers.read_generic(path, session_field="s", item_field="i")
  assert [str(log.item_vocab[c]) for c in log.item] == ids
  assert list(log.item_vocab) == sorted(set(ids))


def _read_iso(path):
  return readers.read_generic(
      path, session_field="s", item_field="i", time_field="time", time_format="iso"
  )


_DATED = {  # file: (header, a row with {} for its date, the date's field, reader)
    "yoochoose-clicks.dat": (
        "",
        "1,{}T10:00:00.000Z,214757390,2053",
        "Timestamp",
        readers.read_yoochoose,
    ),
    "train-item-views.csv": (
        "sessionId;userId;itemId;timeframe;eventdate\n",
        "1;NA;81766;1123827;{}",
        "eventdate",
        readers.read_diginetica,
    ),
    "clicks.csv": ("s,i,time\n", "s1,a,{}", "time", _read_iso),
}


@pytest.mark.parametrize("name", sorted(_DATED))
@pytest.mark.parametrize(
    "date", ["2014-02-31", "2014-04-31", "2015-02-29", "1900-02-29", "2014-13-01", "2014-01-00"]
)
def test_impossible_dates_are_refused(tmp_path, name, date):
  header, row, field, read = _DATED[name]
  good = row.format("2016-02-29") + "\n"  # a leap day
  assert len(read(_write(tmp_path, name, header + good)).item) == 1
  path = _write(tmp_path, name, header + good + row.format(date) + "\n")
  line = header.count("\n") + 2
  with pytest.raises(
      DataError, match=rf"{re.escape(name)}, line {line}, field '{field}': " "expected a date"
  ):
    read(path)


@pytest.mark.parametrize("mmdd", ["0229", "0431", "1301", "0100"])
def test_impossible_tmall_days_are_refused(tmp_path, mmdd):
  header = ",".join(readers.TMALL_HEADER) + "\n"
  path = _write(tmp_path, "user_log_format1.csv", f"{header}1,2,3,4,5,0228,0\n1,2,3,4,5,{mmdd},0\n")
  with pytest.raises(
      DataError,
      match=r"user_log_format1.csv, line 3, field 'time_stamp': "
      rf"expected a date MMDD of 2015, got {int(mmdd)}",
  ):
    readers.read_tmall(path)
  if mmdd == "0229":
    assert len(readers.read_tmall(path, year=2016).item) == 2


def test_short_time_field_in_a_block_shorter_than_a_date(tmp_path):
  # The whole block ("a,b,c\n") is shorter than YYYY-MM-DD: found by tests/test_fuzz.py.
  path = _write(tmp_path, "tiny.csv", "s,i,t\na,b,c\n")
  with pytest.raises(DataError, match=r"tiny.csv, line 2, field 't': expected a date"):
    readers.read_generic(path, session_field="s", item_field="i", time_field="t", time_format="iso")


def test_leap_years_follow_the_gregorian_calendar():
  from ccrec.data.numeric import days_in_month

  assert days_in_month(np.array([2016, 2015, 2000, 1900, 2024]), np.full(5, 2)).tolist() == [
      29,
      28,
      29,
      28,
      29,
  ]
  assert days_in_month(np.full(3, 2015), np.array([4, 13, 0])).tolist() == [30, 0, 0]


def test_long_fraction_digits_are_checked_without_a_pass_per_digit():
  stamps = ["2014-04-05T00:01:00." + "1" * 5000 + "Z", "2014-04-05T00:01:00.5Z"]
  np.testing.assert_allclose(_block(stamps).datetimes("x"), [1396656060 + 1 / 9, 1396656060.5])
  with pytest.raises(DataError, match="line 1, field 'x'"):
    _block(["2014-04-05T00:01:00." + "1" * 5000 + "a1Z"]).datetimes("x")


def test_file_cut_off_mid_line_warns_or_is_refused_when_strict(tmp_path):
  text = (FIX / "sample.inter").read_text()
  last = text.rstrip("\n").rsplit("\n", 1)[1]  # user, item, rating, timestamp
  cut = text[: len(text.rstrip("\n")) - len(last.rsplit("\t", 1)[1]) + 3]  # 3 timestamp digits
  path = _write(tmp_path, "ml-100k.inter", cut)
  with pytest.warns(
      DataWarning, match=r"ml-100k.inter, line 27: the last line has no line " r"break.*cut off"
  ):
    log = readers.read_inter(path)
  assert log.time[-1] == float(last.rsplit("\t", 1)[1][:3])  # read as it stands, but said
  with pytest.raises(DataError, match=r"ml-100k.inter, line 27: the last line has no line "):
    readers.read_inter(path, strict=True)
  whole = readers.read_inter(FIX / "sample.inter", strict=True)
  assert whole.time[-1] == float(last.rsplit("\t", 1)[1])


@pytest.mark.parametrize(
    "name,read",
    [
        ("u.data", readers.read_udata),
        ("train-item-views.csv", readers.read_diginetica),
        ("yoochoose-clicks.dat", readers.read_yoochoose),
        ("events.csv", readers.read_retailrocket),
        ("user_log_format1.csv", readers.read_tmall),
        (
            "generic.tsv",
            lambda p, **kw: readers.read_generic(
                p, session_field="session", item_field="product", **kw
            ),
        ),
    ],
)
def test_every_reader_warns_of_a_missing_last_line_break(tmp_path, name, read):
  path = _write(tmp_path, name, (FIX / name).read_text().rstrip("\n"))
  with pytest.warns(DataWarning, match=re.escape(name)):
    read(path)
  with pytest.raises(DataError, match="the last line has no line break"):
    read(path, strict=True)
  one_line = _write(tmp_path, "one.tsv", "s\tp")  # no other line to compare with: no warning
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert len(list(delimited.blocks(one_line, "\t", ("s", "p")))) == 1
