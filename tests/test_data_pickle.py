"""Tests for ccrec/data/safe_pickle.py: only lists, tuples and ints; nothing ever runs."""

import json
import os
import pickle

import numpy as np
import pytest

from ccrec.data import safe_pickle
from ccrec.data.errors import DataError

import helpers

SESSIONS = [[1, 2, 3, 4], [5, 1], [2, 6, 2]]


def _srgnn_examples(sessions):
  """SR-GNN's process_seqs: longest prefix first within each session."""
  prefixes, targets = [], []
  for seq in sessions:
    for i in range(1, len(seq)):
      targets.append(seq[-i])
      prefixes.append(seq[:-i])
  return prefixes, targets


def _dump(path, obj, protocol=pickle.HIGHEST_PROTOCOL):
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=protocol)
  return path


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_loads_srgnn_pairs_and_rebuilds_sessions(tmp_path, protocol):
  train = _dump(tmp_path / "train.txt", _srgnn_examples(SESSIONS), protocol)
  test = _dump(tmp_path / "test.txt", _srgnn_examples([[3, 4, 1]]), protocol)
  ds = safe_pickle.from_pickles(train, test, valid_fraction=0.0)
  assert ds.train.to_lists() == SESSIONS
  assert ds.num_items == 6
  assert ds.test.prefixes.to_lists() == [[3, 4], [3]] and ds.test.targets.tolist() == [1, 4]
  # No double counting: augmenting the rebuilt sessions gives back exactly the examples.
  ex = ds.train_examples()
  want = sorted(zip(map(tuple, _srgnn_examples(SESSIONS)[0]), _srgnn_examples(SESSIONS)[1]))
  assert sorted(zip(map(tuple, ex.prefixes.to_lists()), ex.targets.tolist())) == want
  assert ds.manifest["statistics"]["examples_added_by_rebuilding"] == 0


def test_tuple_pair_and_validation_split(tmp_path):
  prefixes, targets = _srgnn_examples(SESSIONS * 4)
  train = _dump(tmp_path / "train.txt", (prefixes, targets))
  test = _dump(tmp_path / "test.txt", ([[1]], [2]))
  ds = safe_pickle.from_pickles(train, test, valid_fraction=0.25, seed=1)
  assert len(ds.train) == 9
  assert len(ds.train_examples()) + len(ds.valid) == len(targets)


def test_incomplete_runs_are_refused_unless_not_strict(tmp_path):
  prefixes, targets = _srgnn_examples(SESSIONS)
  # The first session lacks its shortest example ([1] -> 2): rebuilding would add it.
  train = _dump(tmp_path / "train.txt", (prefixes[:2] + prefixes[3:], targets[:2] + targets[3:]))
  test = _dump(tmp_path / "test.txt", ([[1]], [2]))
  with pytest.raises(DataError, match="not complete longest-first prefix runs"):
    safe_pickle.from_pickles(train, test)
  ds = safe_pickle.from_pickles(train, test, strict=False, valid_fraction=0.0)
  assert ds.train.to_lists() == SESSIONS
  assert ds.manifest["statistics"]["examples_added_by_rebuilding"] == 1


class _Exploit:

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["reduce", "numpy", "nested"])
def test_malicious_pickle_runs_nothing(tmp_path, payload):
  marker = tmp_path / "pwned"
  exploit = _Exploit()
  exploit.marker = marker
  obj = {"reduce": exploit, "numpy": np.arange(3), "nested": ([[1, 2], [exploit]], [3, 4])}[payload]
  path = tmp_path / "train.txt"
  path.write_bytes(pickle.dumps(obj))
  message = r"train.txt, byte \d+: pickle opcode .* not allowed.*nothing was run"
  with pytest.raises(DataError, match=message):
    safe_pickle.load_examples(path)
  assert not marker.exists()
  # The second wall on its own also refuses to name any global.
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    safe_pickle._NoGlobals(open(path, "rb")).load()  # pylint: disable=protected-access
  assert not marker.exists()


@pytest.mark.parametrize(
    "obj,message",
    [
        ({"a": 1}, "opcode"),
        (([[1, 2]], [3, 4]), "1 prefixes but 2 targets"),
        (([[1, 0]], [3]), "example 0: the prefix"),
        (([[1, 2]], [-1]), "example 0: the target"),
        (([[1.5]], [1]), r"byte \d+: the pickle holds the float 1.5; .*ids are integers"),
        ([1, 2, 3], "expected a pair"),
    ],
)
def test_wrong_structure(tmp_path, obj, message):
  path = _dump(tmp_path / "x.pkl", obj)
  with pytest.raises(DataError, match=message):
    safe_pickle.load_examples(path)


def test_garbage_and_missing(tmp_path):
  path = tmp_path / "x.pkl"
  path.write_bytes(b"\x80\x04not a pickle")
  with pytest.raises(DataError, match="x.pkl"):
    safe_pickle.load_examples(path)
  with pytest.raises(DataError, match="file not found"):
    safe_pickle.load_examples(tmp_path / "none.pkl")


def test_id_beyond_int32_names_file_and_value(tmp_path):
  train = _dump(tmp_path / "train.txt", ([[1, 2**40], [1]], [3, 2**40]))
  test = _dump(tmp_path / "test.txt", ([[1]], [2]))
  with pytest.raises(DataError, match=r"train.txt: example 0: id 1099511627776 is out of range"):
    safe_pickle.from_pickles(train, test, valid_fraction=0.0)


_LOAD = """
import json, sys
from ccrec.data import safe_pickle
from ccrec.data.errors import DataError
try:
  if sys.argv[2] == "session":
    prefixes, targets = safe_pickle.load_examples(sys.argv[1])
    print(json.dumps({"examples": len(targets)}))
  else:
    ds = safe_pickle.from_pickles(sys.argv[1], sys.argv[3], strict=False)
    print(json.dumps({"train": len(ds.train)}))
except DataError as e:
  print(json.dumps({"error": str(e)}))
"""


@pytest.mark.parametrize("role", ["session", "training"])
def test_memo_references_cannot_amplify_a_small_pickle(tmp_path, role):
  # 82 KB: one list of 1,000 ids, referenced 20,000 times through the memo (20M ids).
  shared = list(range(1, 1001))
  path = _dump(tmp_path / "train.txt", ([shared] * 20_000, [1] * 20_000), protocol=4)
  assert os.path.getsize(path) < 100_000
  test = _dump(tmp_path / "test.txt", ([[1]], [2]))
  run = helpers.run_limited(_LOAD, memory_mib=1024, args=(path, role, test))
  assert run.returncode == 0, run.stderr[-3000:]
  error = json.loads(run.stdout).get("error", "")
  assert (
      "train.txt: the pickle holds 20,020,000 ids counted with repetition, more than 82," in error
  )
  assert "memo references" in error and "max_ids=" in error
  # An explicit bound overrides the default, and files without repetition read as before.
  with pytest.raises(DataError, match="more than 1,000 .max_ids."):
    safe_pickle.load_examples(
        _dump(tmp_path / "small.txt", ([list(range(1, 600))] * 2, [1, 2])), max_ids=1000
    )
  assert len(safe_pickle.load_examples(tmp_path / "small.txt")[0]) == 2


def test_rebuilt_sessions_cannot_make_a_quadratic_validation_split(tmp_path):
  # strict=False keeps sessions rebuilt from one long example each: prefix-augmenting one
  # for validation would materialise 20,000 x 20,001 / 2 ids from a 600 KB file.
  train = _dump(
      tmp_path / "train.txt", ([list(range(1, 20_001)) for _ in range(10)], [5] * 10), protocol=4
  )
  test = _dump(tmp_path / "test.txt", ([[1]], [2]))
  with pytest.raises(
      DataError,
      match=r"train.txt: its validation examples would hold " r"200,010,000 ids .* pass max_len=",
  ):
    safe_pickle.from_pickles(train, test, strict=False)
  ds = safe_pickle.from_pickles(train, test, strict=False, max_len=50)
  assert len(ds.valid) == 20_000 and ds.valid.prefixes.lengths().max() == 50
