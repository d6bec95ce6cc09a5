"""Tests for launch/prepare_data.py and the synthetic Yoochoose log writer."""

import datetime
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from ccrec.data import dataset, readers, sources, synthetic_logs

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIX = ROOT / "tests/fixtures"
SHARED = ROOT.parent / "shared/data/ml-100k/ml-100k.inter"


def _prepare(*flags, env=None):
  run = subprocess.run([sys.executable, str(ROOT / "launch/prepare_data.py"), *flags],
                       capture_output=True, text=True, env={**os.environ, **(env or {})},
                       cwd=ROOT, timeout=120, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  return run.stdout


def test_prepare_diginetica_fixture(tmp_path):
  out = _prepare("--dataset=diginetica", f"--input={FIX / 'train-item-views.csv'}",
                 f"--data_dir={tmp_path}", "--min_item_count=1", "--valid_fraction=0.2")
  assert "| dataset | train examples | valid | test | items | avg length |" in out
  (prepared,) = (tmp_path / "processed").iterdir()
  ds = dataset.load(prepared)
  row = f"| diginetica | {len(ds.train_examples()):,} | {len(ds.valid):,} | {len(ds.test):,} |"
  assert row in out
  assert ds.manifest["recipe"]["min_item_count"] == 1
  assert ds.manifest["recipe"]["test_days"] == 7  # the dataset's default kept


def test_prepare_pickles(tmp_path):
  for name, obj in (("train.txt", ([[1, 2], [1]], [3, 2])), ("test.txt", ([[2]], [3]))):
    (tmp_path / name).write_bytes(pickle.dumps(obj))
  out = _prepare("--dataset=pickle", f"--input={tmp_path / 'train.txt'}",
                 f"--test_input={tmp_path / 'test.txt'}", f"--output={tmp_path / 'out'}",
                 "--valid_fraction=0")
  assert "| pickled | 2 | 0 | 1 | 3 |" in out
  assert dataset.load(tmp_path / "out").train.to_lists() == [[1, 2, 3]]


@pytest.mark.skipif(not SHARED.is_file(), reason=f"{SHARED} absent")
def test_prepare_ml100k_prints_the_table(tmp_path):
  out = _prepare("--dataset=ml-100k", env={"CCREC_DATA_DIR": str(tmp_path),
                                           sources.ENV_INTER: str(SHARED)})
  assert "| ml-100k | 97,171 | 943 | 943 | 1,682 | 106.04 |" in out


def test_synthetic_yoochoose_log_roundtrip(tmp_path):
  log = synthetic_logs.yoochoose_like_log(500, 200, seed=2, days=30)
  path = tmp_path / "yoochoose-clicks.dat"
  synthetic_logs.write_yoochoose(log, path, lines_per_block=300)
  lines = path.read_text().splitlines()
  assert len(lines) == len(log.session)
  first = lines[0].split(",")
  t = datetime.datetime.fromtimestamp(log.time_ms[0] / 1000, datetime.timezone.utc)
  assert first == [str(log.session[0]), t.strftime("%Y-%m-%dT%H:%M:%S.") +
                   f"{log.time_ms[0] % 1000:03d}Z", str(log.item[0]), "0"]
  back = readers.read_yoochoose(path)
  np.testing.assert_array_equal(back.session, log.session)
  np.testing.assert_array_equal(back.item_vocab[back.item], log.item)
  np.testing.assert_allclose(back.time * 1000, log.time_ms, atol=1e-3)


def test_import_is_numpy_only():
  code = "import sys, ccrec.data; assert 'jax' not in sys.modules and 'flax' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
