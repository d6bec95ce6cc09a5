"""ccrec.workflow.workdir: the saved config, the dataset record, loading data. No training."""

import json
import os

import numpy as np
import pytest

from ccrec.data import Examples, Sequences, SessionDataset
from ccrec.workflow import workdir as workdir_lib
from ccrec.workflow.workdir import WorkdirError

from helpers import tiny


def _dataset(train=((1, 2, 3), (2, 3)), valid_target=3, name="toy") -> SessionDataset:
  seqs = Sequences.from_lists([list(s) for s in train])
  one = lambda t: Examples(Sequences.from_lists([[1, 2]]), np.array([t], np.int32))
  counts = np.bincount(seqs.items, minlength=4).astype(np.int64)
  return SessionDataset(
      name=name,
      num_items=3,
      train=seqs,
      valid=one(valid_target),
      test=one(3),
      item_counts=counts,
      manifest={},
  )


def test_flatten_and_differences():
  assert workdir_lib.flatten({"a": {"b": 1, "c": (2, 3)}, "d": "x"}) == {
      "a.b": 1,
      "a.c": [2, 3],
      "d": "x",
  }
  saved = workdir_lib.flatten(workdir_lib.config_dict(tiny()))
  now = workdir_lib.flatten(workdir_lib.config_dict(tiny(**{"model.d": 32, "seed": 1})))
  assert workdir_lib.config_differences(saved, now) == ["model.d", "seed"]


def test_config_is_saved_once_and_another_is_refused(tmp_path):
  wd = str(tmp_path / "w")
  assert workdir_lib.check_config(wd, tiny()) is False  # nothing saved yet, nothing written
  assert not os.path.exists(wd)
  workdir_lib.prepare(wd, tiny())
  assert workdir_lib.check_config(wd, tiny()) is True
  loaded = workdir_lib.load_config(wd)
  assert loaded.to_json() == tiny().to_json()
  with pytest.raises(AttributeError):
    loaded.modle = 1  # locked
  before = open(os.path.join(wd, "config.json")).read()
  with pytest.raises(WorkdirError, match=r"model\.d: saved 16 vs now 32.*nothing was changed"):
    workdir_lib.prepare(wd, tiny(**{"model.d": 32}))
  assert open(os.path.join(wd, "config.json")).read() == before


@pytest.mark.parametrize(
    "content,error",
    [
        (None, "not found: .* is not a ccrec workdir"),
        ("{not json", "is not valid JSON"),
        (json.dumps({"modle": {"d": 3}}), "does not match the config schema"),
    ],
)
def test_unreadable_config_json_is_named(tmp_path, content, error):
  wd = tmp_path / "w"
  if content is not None:
    wd.mkdir()
    (wd / "config.json").write_text(content)
  with pytest.raises(WorkdirError, match=error):
    workdir_lib.load_config(str(wd))


def test_fingerprint_sees_contents_not_only_sizes():
  a, b = _dataset(), _dataset(train=((1, 2, 3), (3, 2)))  # same sizes, other clicks
  assert workdir_lib.fingerprint(a) == workdir_lib.fingerprint(_dataset())
  assert workdir_lib.fingerprint(a) != workdir_lib.fingerprint(b)
  assert workdir_lib.fingerprint(a) != workdir_lib.fingerprint(_dataset(valid_target=2))


def test_dataset_record_written_then_checked(tmp_path):
  wd = str(tmp_path)
  workdir_lib.check_dataset(wd, _dataset())
  with open(os.path.join(wd, "dataset.json")) as f:
    record = json.load(f)
  assert record == {
      "name": "toy",
      "num_items": 3,
      "train_sequences": 2,
      "valid": 1,
      "test": 1,
      "sha256": workdir_lib.fingerprint(_dataset()),
  }
  workdir_lib.check_dataset(wd, _dataset())  # the same data passes
  with pytest.raises(WorkdirError, match="differing: sha256"):
    workdir_lib.check_dataset(wd, _dataset(train=((1, 2, 3), (3, 2))))
  with open(os.path.join(wd, "dataset.json"), "w") as f:
    f.write("[1, 2]")
  with pytest.raises(WorkdirError, match="must hold a JSON object"):
    workdir_lib.check_dataset(wd, _dataset())


def test_load_data_builds_the_synthetic_dataset_of_the_config():
  c = tiny()
  ds = workdir_lib.load_data(c)
  assert ds.num_items == c.data.synthetic_items
  assert max(len(p) for p in ds.test.prefixes) <= c.data.max_len
  again = workdir_lib.load_data(c)  # seeded: the same data every time
  assert workdir_lib.fingerprint(again) == workdir_lib.fingerprint(ds)
