"""Tests for launch/prepare_data.py and the synthetic Yoochoose log writer."""

import datetime
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np

from ccrec.benchmarks import synthetic_logs
from ccrec.data import dataset, readers, sources

import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIX = ROOT / "tests/fixtures"


def _prepare(*flags, env=None):
  run = subprocess.run(
      [sys.executable, str(ROOT / "launch/prepare_data.py"), *flags],
      capture_output=True,
      text=True,
      env={**os.environ, **(env or {})},
      cwd=ROOT,
      timeout=120,
      check=False,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  return run.stdout


def _prepare_fails(*flags):
  run = subprocess.run(
      [sys.executable, str(ROOT / "launch/prepare_data.py"), *flags],
      capture_output=True,
      text=True,
      cwd=ROOT,
      timeout=120,
      check=False,
  )
  assert run.returncode != 0, run.stdout[-2000:]
  return run.stderr


def test_prepare_diginetica_fixture(tmp_path):
  out = _prepare(
      "--dataset=diginetica",
      f"--input={FIX / 'train-item-views.csv'}",
      f"--data_dir={tmp_path}",
      "--min_item_count=1",
      "--valid_fraction=0.2",
  )
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
  out = _prepare(
      "--dataset=pickle",
      f"--input={tmp_path / 'train.txt'}",
      f"--test_input={tmp_path / 'test.txt'}",
      f"--output={tmp_path / 'out'}",
      "--valid_fraction=0",
  )
  assert "| pickled | 2 | 0 | 1 | 3 |" in out
  assert dataset.load(tmp_path / "out").train.to_lists() == [[1, 2, 3]]


@helpers.needs_ml100k
def test_prepare_ml100k_prints_the_table(tmp_path):
  out = _prepare(
      "--dataset=ml-100k",
      env={"CCREC_DATA_DIR": str(tmp_path), sources.ENV_INTER: str(helpers.ml100k_inter())},
  )
  assert "| ml-100k | 97,171 | 943 | 943 | 1,682 | 106.04 |" in out


def test_synthetic_yoochoose_log_roundtrip(tmp_path):
  log = synthetic_logs.yoochoose_like_log(500, 200, seed=2, days=30)
  path = tmp_path / "yoochoose-clicks.dat"
  synthetic_logs.write_yoochoose(log, path, lines_per_block=300)
  lines = path.read_text().splitlines()
  assert len(lines) == len(log.session)
  first = lines[0].split(",")
  t = datetime.datetime.fromtimestamp(log.time_ms[0] / 1000, datetime.timezone.utc)
  assert first == [
      str(log.session[0]),
      t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{log.time_ms[0] % 1000:03d}Z",
      str(log.item[0]),
      "0",
  ]
  back = readers.read_yoochoose(path)
  np.testing.assert_array_equal(back.session, log.session)
  np.testing.assert_array_equal(back.item_vocab[back.item], log.item)
  np.testing.assert_allclose(back.time * 1000, log.time_ms, atol=1e-3)


def test_import_is_numpy_only():
  code = "import sys, ccrec.data; assert 'jax' not in sys.modules and 'flax' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


GENERIC = (
    "--session_field=sid",
    "--item_field=item",
    "--time_field=ts",
    "--min_item_count=1",
    "--test_days=0.3",
    "--valid_fraction=0",
)


def test_prepare_refuses_to_replace_a_different_output(tmp_path):
  rows = ["sid,item,ts"] + [f"s{i // 3},i{i % 5},{i * 600}" for i in range(60)]
  for name, text in (("a", rows), ("b", [r.replace(",i1,", ",i9,") for r in rows])):
    (tmp_path / name).mkdir()
    (tmp_path / name / "clicks.csv").write_text("\n".join(text) + "\n")
  out = tmp_path / "P"
  _prepare(f"--dataset={tmp_path / 'a/clicks.csv'}", f"--output={out}", *GENERIC)
  before = dataset.load(out).manifest
  err = _prepare_fails(f"--dataset={tmp_path / 'b/clicks.csv'}", f"--output={out}", *GENERIC)
  assert f"{out}: already holds a different prepared dataset (sources[0]: " in err
  assert "--overwrite" in err
  assert dataset.load(out).manifest == before
  _prepare(f"--dataset={tmp_path / 'a/clicks.csv'}", f"--output={out}", "--rebuild", *GENERIC)
  _prepare(f"--dataset={tmp_path / 'b/clicks.csv'}", f"--output={out}", "--overwrite", *GENERIC)
  assert "i9" in dataset.load(out).manifest["id_map"]


def test_prepare_pickles_refuses_to_replace_a_different_output(tmp_path):
  for name, obj in (
      ("train.txt", ([[1, 2], [1]], [3, 2])),
      ("test.txt", ([[2]], [3])),
      ("other.txt", ([[1, 4], [1]], [3, 4])),
  ):
    (tmp_path / name).write_bytes(pickle.dumps(obj))
  flags = (
      f"--test_input={tmp_path / 'test.txt'}",
      f"--output={tmp_path / 'out'}",
      "--valid_fraction=0",
  )
  _prepare("--dataset=pickle", f"--input={tmp_path / 'train.txt'}", *flags)
  err = _prepare_fails("--dataset=pickle", f"--input={tmp_path / 'other.txt'}", *flags)
  assert "already holds a different prepared dataset" in err
  assert dataset.load(tmp_path / "out").train.to_lists() == [[1, 2, 3]]


def test_prepare_non_utf8_ids_need_an_encoding(tmp_path):
  path = tmp_path / "latin1.csv"
  rows = [
      f"s{s},{item},{s * 20000 + k}"
      for s in range(6)
      for k, item in enumerate(["caf\xe9", "caf\xe8", "th\xe9", "tea"])
  ]
  path.write_bytes(("sid,item,ts\n" + "\n".join(rows) + "\n").encode("latin-1"))
  err = _prepare_fails(f"--dataset={path}", f"--output={tmp_path / 'out'}", *GENERIC)
  assert "latin1.csv, line 2, field 'item': not valid utf-8 text" in err
  _prepare(f"--dataset={path}", f"--output={tmp_path / 'out'}", "--encoding=latin-1", *GENERIC)
  ds = dataset.load(tmp_path / "out")
  assert ds.num_items == 4 and set(ds.manifest["id_map"]) == {"café", "cafè", "thé", "tea"}


def test_named_errors_print_alone_and_the_traceback_under_verbosity(tmp_path):
  cut = tmp_path / "cut.inter"
  cut.write_text((FIX / "sample.inter").read_text()[:-5])  # the last timestamp loses 4 digits
  stderr = _prepare_fails(f"--dataset={cut}", f"--output={tmp_path / 'out'}", "--strict")
  assert stderr.strip().splitlines() == [
      f"DataError: {cut}, line 27: the last line has no line break, unlike the lines before it: "
      "the file may be cut off mid-line (an interrupted download or copy?); refused (strict). "
      "Complete or re-fetch the file, or add the line break if the line is whole"
  ]
  verbose = _prepare_fails(
      f"--dataset={cut}", f"--output={tmp_path / 'out'}", "--strict", "-v", "1"
  )
  assert "Traceback (most recent call last)" in verbose and "DataError" in verbose
  out = _prepare(f"--dataset={cut}", f"--output={tmp_path / 'out'}")  # not strict: read, warned
  assert "| cut |" in out
