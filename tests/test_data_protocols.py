"""Tests for ccrec/data/recipes.py and protocols.py: recipe steps and both protocols.

The session protocol is checked against a literal Python transcription of
SR-GNN's preprocess.py on the Diginetica and Yoochoose fixtures.
"""

import collections
import datetime
import operator
import pathlib

import numpy as np
import pytest

from ccrec.data import load_dataset, protocols, recipes, registry
from ccrec.data.errors import DataError
from ccrec.data.recipes import ClickLog, Recipe

FIX = pathlib.Path(__file__).parent / "fixtures"


def _log(sessions, times=None):
  """ClickLog from {session: [items]} (file order = dict order), time = row index unless given."""
  s = [k for k, v in sessions.items() for _ in v]
  items = [i for v in sessions.values() for i in v]
  vocab, codes = np.unique(items, return_inverse=True)
  time = np.arange(len(items), dtype=float) if times is None else np.asarray(times, float)
  return ClickLog(np.asarray(s), codes, time, vocab, [{"path": "mem"}])


def _sessions(log):
  offsets = recipes.group(log.session)
  return [log.item_vocab[log.item[a:b]].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


def test_filter_until_stable_vs_once():
  # min_item_count=3 on the first log: items 9 and 7 (2 occurrences each) go in the first
  # pass; session 2 is then empty. Both modes agree (nothing cascades).
  log = _log({1: [1, 2, 1, 2], 2: [9, 7], 3: [9, 7, 1, 1], 4: [1, 2]})
  for until_stable in (False, True):
    rec = Recipe(min_item_count=3, filter_until_stable=until_stable)
    assert _sessions(recipes.filter_log(log, rec)) == [[1, 2, 1, 2], [1, 1], [1, 2]]
  log = _log({1: [5, 6], 2: [5, 7], 3: [6, 8], 4: [1, 1, 1]})
  # min_item_count=2: 7 and 8 go; sessions 2, 3 become length 1 and go; then 5, 6 occur once.
  assert _sessions(recipes.filter_log(log, Recipe(min_item_count=2))) == [[1, 1, 1]]
  once = Recipe(min_item_count=2, filter_until_stable=False)
  assert _sessions(recipes.filter_log(log, once)) == [[5, 6], [1, 1, 1]]


def test_length_cap_truncate_and_drop():
  log = _log({1: [1, 2, 3, 4, 5], 2: [6, 7]})
  keep = Recipe(min_item_count=0, max_session_length=3)
  assert _sessions(recipes.filter_log(log, keep)) == [[3, 4, 5], [6, 7]]
  drop = keep.replace(long_sessions="drop")
  assert _sessions(recipes.filter_log(log, drop)) == [[6, 7]]


def test_first_sessions_by_start_time():
  log = _log({1: [1, 2], 2: [3, 4], 3: [5, 6]}, times=[5, 6, 0, 1, 9, 9])
  assert _sessions(recipes.first_sessions(recipes.sort_sessions(log), 2)) == [[1, 2], [3, 4]]


def test_sort_is_stable_within_session():
  log = _log({1: [3, 1, 2]}, times=[7, 7, 5])
  assert _sessions(recipes.sort_sessions(log)) == [[2, 3, 1]]


def test_recipe_settings_are_checked():
  with pytest.raises(DataError, match="unknown recipe setting"):
    Recipe().replace(min_itme_count=3)
  with pytest.raises(DataError, match="max_len"):
    Recipe().replace(max_len=0)
  with pytest.raises(DataError, match="protocol"):
    Recipe().replace(protocol="random")
  with pytest.raises(DataError, match="min_session_length"):
    Recipe(protocol="loo").replace(min_session_length=2)


@pytest.mark.parametrize(
    "setting,value,message",
    [
        ("min_item_count", "5", r"min_item_count must be an integer, got '5' \(str\)"),
        ("valid_fraction", "0.1", r"valid_fraction must be a number, got '0.1'"),
        ("filter_until_stable", 1, r"filter_until_stable must be True or False, got 1"),
        ("max_len", 2.0, r"max_len must be an integer or None, got 2.0"),
        ("test_days", True, r"test_days must be a number, got True"),
    ],
)
def test_recipe_setting_types_are_checked(tmp_path, setting, value, message):
  with pytest.raises(DataError, match=message):
    load_dataset(
        FIX / "generic.tsv",
        data_dir=tmp_path,
        **{setting: value},
        reader_options={"session_field": "session", "item_field": "product"},
    )
  numpy_scalars = {
      "min_item_count": np.int64(5),
      "valid_fraction": np.float32(0.25),
      "filter_until_stable": np.bool_(False),
      "max_len": np.int32(7),
  }
  assert Recipe().replace(**numpy_scalars).min_item_count == 5


def test_loo_hand_computed():
  # user 7: times tie between items 30 and 10 -> file order; user 8 has 3 clicks.
  log = ClickLog(
      np.array([7, 8, 7, 7, 8, 7, 8]),
      np.array([2, 0, 0, 1, 1, 3, 2]),
      np.array([5.0, 1, 3, 3, 2, 9, 3]),
      np.array([10, 20, 30, 40]),
      [{"path": "mem"}],
  )
  ds = protocols.loo(
      log, Recipe(protocol="loo", min_item_count=0, min_session_length=3, max_len=2), "tiny"
  )
  raw = {v: int(k) for k, v in ds.manifest["id_map"].items()}
  as_raw = lambda a: [raw[x] for x in a]
  # user 7 sorted: (3: 10), (3: 20), (5: 30), (9: 40); user 8: (1: 10), (2: 20), (3: 30)
  assert [as_raw(ds.train[i]) for i in range(2)] == [[10, 20], [10]]
  assert as_raw(ds.valid.targets) == [30, 20] and as_raw(ds.test.targets) == [40, 30]
  assert [as_raw(ds.valid.prefixes[i]) for i in range(2)] == [[10, 20], [10]]
  assert [as_raw(ds.test.prefixes[i]) for i in range(2)] == [[20, 30], [10, 20]]
  # ids by first appearance in time order: 10 (t=1), 20 (t=2), 30 (t=3), 40.
  assert ds.manifest["id_map"] == {"10": 1, "20": 2, "30": 3, "40": 4}
  np.testing.assert_array_equal(ds.item_counts, [0, 2, 1, 0, 0])


def test_loo_on_inter_fixture(tmp_path):
  ds = load_dataset(FIX / "sample.inter", data_dir=tmp_path, max_len=None)
  lines = (FIX / "sample.inter").read_text().splitlines()[1:]
  users = collections.Counter(line.split("\t")[0] for line in lines)
  assert len(ds.test) == len(ds.valid) == len(users)
  assert len(ds.train_examples()) == sum(n - 3 for n in users.values())


def _srgnn(path, dataset):
  """SR-GNN preprocess.py (github.com/CRIPAC-DIG/SR-GNN), transcribed; valid split omitted."""
  sess_clicks, sess_date = {}, {}
  with open(path) as f:
    lines = f.read().splitlines()
  if dataset == "diginetica":
    rows = [line.split(";") for line in lines[1:]]
  else:
    rows = [line.split(",") for line in lines]
  curid, curdate = None, None
  for r in rows:
    if dataset == "diginetica":
      sessid, item, stamp = r[0], (r[2], int(r[3])), r[4]
    else:
      sessid, item, stamp = r[0], r[2], r[1]
    if curdate and curid != sessid:
      sess_date[curid] = _date(curdate, dataset)
    curid, curdate = sessid, stamp
    sess_clicks.setdefault(sessid, []).append(item)
  sess_date[curid] = _date(curdate, dataset)
  if dataset == "diginetica":
    for i in list(sess_clicks):
      sess_clicks[i] = [c[0] for c in sorted(sess_clicks[i], key=operator.itemgetter(1))]
  for s in list(sess_clicks):
    if len(sess_clicks[s]) == 1:
      del sess_clicks[s], sess_date[s]
  counts = collections.Counter(i for seq in sess_clicks.values() for i in seq)
  for s in list(sess_clicks):
    filseq = [i for i in sess_clicks[s] if counts[i] >= 5]
    if len(filseq) < 2:
      del sess_clicks[s], sess_date[s]
    else:
      sess_clicks[s] = filseq
  maxdate = max(sess_date.values())
  split = maxdate - 86400 * (7 if dataset == "diginetica" else 1)
  tra = sorted([(s, d) for s, d in sess_date.items() if d < split], key=operator.itemgetter(1))
  tes = sorted([(s, d) for s, d in sess_date.items() if d > split], key=operator.itemgetter(1))
  item_dict, train = {}, []
  for s, _ in tra:
    out = []
    for i in sess_clicks[s]:
      item_dict.setdefault(i, len(item_dict) + 1)
      out.append(item_dict[i])
    train.append(out)
  test = [[item_dict[i] for i in sess_clicks[s] if i in item_dict] for s, _ in tes]
  test = [seq for seq in test if len(seq) >= 2]
  examples = [(tuple(seq[:-i]), seq[-i]) for seq in test for i in range(1, len(seq))]
  return train, examples, item_dict


def _date(text, dataset):
  fmt = "%Y-%m-%d" if dataset == "diginetica" else "%Y-%m-%dT%H:%M:%S"
  # mktime in UTC: only differences matter.
  return (
      datetime.datetime.strptime(text[:19] if dataset != "diginetica" else text, fmt)
      .replace(tzinfo=datetime.timezone.utc)
      .timestamp()
  )


@pytest.mark.parametrize(
    "dataset,file", [("diginetica", "train-item-views.csv"), ("yoochoose", "yoochoose-clicks.dat")]
)
def test_session_protocol_reproduces_srgnn(tmp_path, dataset, file):
  train, examples, item_dict = _srgnn(FIX / file, dataset)
  ds = load_dataset(dataset, raw=FIX / file, data_dir=tmp_path, valid_fraction=0.0, max_len=None)
  assert ds.train.to_lists() == train
  assert {k: v for k, v in ds.manifest["id_map"].items()} == {
      str(k[0] if isinstance(k, tuple) else k): v for k, v in item_dict.items()
  }
  got = sorted((tuple(ds.test.prefixes[i]), int(t)) for i, t in enumerate(ds.test.targets))
  assert got == sorted(examples)
  assert ds.num_items == len(item_dict)


def test_session_protocol_valid_and_fractions(tmp_path):
  full = load_dataset(
      "yoochoose",
      raw=FIX / "yoochoose-clicks.dat",
      data_dir=tmp_path,
      min_item_count=1,
      valid_fraction=0.0,
  )
  ds = load_dataset(
      "yoochoose",
      raw=FIX / "yoochoose-clicks.dat",
      data_dir=tmp_path,
      min_item_count=1,
      valid_fraction=0.25,
      seed=3,
  )
  assert len(ds.train) + ds.manifest["statistics"]["valid_sessions"] == len(full.train)
  assert len(ds.train_examples()) + len(ds.valid) == len(full.train_examples())
  again = load_dataset(
      "yoochoose",
      raw=FIX / "yoochoose-clicks.dat",
      data_dir=tmp_path,
      min_item_count=1,
      valid_fraction=0.25,
      seed=3,
      rebuild=True,
  )
  np.testing.assert_array_equal(ds.valid.targets, again.valid.targets)
  quarter = load_dataset(
      "yoochoose1_4",
      raw=FIX / "yoochoose-clicks.dat",
      data_dir=tmp_path,
      min_item_count=1,
      valid_fraction=0.0,
  )
  assert len(quarter.train) == len(full.train) // 4
  # the most recent quarter: the last sessions of the full (time-ordered) training set
  inv = {v: k for k, v in full.manifest["id_map"].items()}
  inv_q = {v: k for k, v in quarter.manifest["id_map"].items()}
  assert [[inv_q[x] for x in s] for s in quarter.train.to_lists()] == [
      [inv[x] for x in s] for s in full.train.to_lists()[-len(quarter.train) :]
  ]
  # every test item was seen in training
  assert set(quarter.test.targets.tolist()) <= set(quarter.train.items.tolist())


def test_empty_after_filtering_names_file_and_setting(tmp_path):
  message = r"train-item-views.csv: .* empty after preprocessing.*min_item_count"
  with pytest.raises(DataError, match=message):
    load_dataset(
        "diginetica", raw=FIX / "train-item-views.csv", data_dir=tmp_path, min_item_count=1000
    )


def test_unknown_dataset_and_missing_raw(tmp_path):
  with pytest.raises(DataError, match="unknown dataset 'ml-1m'"):
    load_dataset("ml-1m", data_dir=tmp_path)
  with pytest.raises(DataError, match="train-item-views.csv from CIKM Cup 2016"):
    load_dataset("diginetica", data_dir=tmp_path)
  with pytest.raises(DataError, match="max_len"):
    load_dataset("diginetica", raw=FIX / "train-item-views.csv", data_dir=tmp_path, max_len=0)


def test_other_readers_through_the_session_protocol(tmp_path):
  rr = load_dataset(
      "retailrocket", raw=FIX / "events.csv", data_dir=tmp_path, min_item_count=1, test_days=1
  )
  tm = load_dataset("tmall", raw=FIX / "user_log_format1.csv", data_dir=tmp_path, min_item_count=1)
  gen = load_dataset(
      FIX / "generic.tsv",
      data_dir=tmp_path,
      min_item_count=1,
      test_days=0.1 / 86400,
      valid_fraction=0.0,
      reader_options={"session_field": "session", "item_field": "product", "time_field": "ts"},
  )
  for ds in (rr, tm, gen):
    assert len(ds.train_examples()) > 0 and len(ds.test) > 0
    assert ds.item_counts.sum() == len(ds.train.items)
  # generic: s3 (length 1) dropped; s2 ends at 12 (train), s1 at 12.25 (test); split at 12.15;
  # B never occurs in training, so the test session [A, B, C] becomes [A, C].
  inv = {v: k for k, v in gen.manifest["id_map"].items()}
  assert [[inv[x] for x in s] for s in gen.train.to_lists()] == [["A", "C"]]
  assert [[inv[x] for x in gen.test.prefixes[0]], inv[gen.test.targets[0]]] == [["A"], "C"]
  with pytest.raises(DataError, match="bad reader options"):
    load_dataset(FIX / "generic.tsv", data_dir=tmp_path, reader_options={"colour": 1})


def test_output_with_a_different_dataset_is_not_replaced(tmp_path):
  out = tmp_path / "P"
  options = {"session_field": "session", "item_field": "product", "time_field": "ts"}
  settings = dict(
      output=out,
      min_item_count=1,
      test_days=0.1 / 86400,
      valid_fraction=0.0,
      reader_options=options,
  )
  first, _ = registry.prepare(FIX / "generic.tsv", **settings)
  other = tmp_path / "b" / "generic.tsv"
  other.parent.mkdir()
  other.write_text((FIX / "generic.tsv").read_text().replace("\tA\t", "\tZ\t"))
  before = (out / "data.npz").read_bytes(), (out / "manifest.json").read_bytes()
  with pytest.raises(
      DataError,
      match=r"P: already holds a different prepared dataset "
      r"\(sources\[0\]: \S*/generic.tsv sha256 \w+ -> \S*b/generic.tsv sha256 "
      r"\w+\); pass overwrite=True",
  ):
    registry.prepare(other, **settings)
  with pytest.raises(DataError, match=r"P: already holds .*recipe.min_item_count: 1 -> 2"):
    registry.prepare(FIX / "generic.tsv", **{**settings, "min_item_count": 2})
  assert ((out / "data.npz").read_bytes(), (out / "manifest.json").read_bytes()) == before
  same, _ = registry.prepare(FIX / "generic.tsv", rebuild=True, **settings)  # identical data
  assert same.manifest["id_map"] == first.manifest["id_map"]
  replaced, _ = registry.prepare(other, overwrite=True, **settings)
  assert "Z" in replaced.manifest["id_map"] and "A" not in replaced.manifest["id_map"]
