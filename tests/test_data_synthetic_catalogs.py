"""Tests for ccrec/data/synthetic_catalogs.py and ccrec/data/sparse_baselines.py: exact
statistics, determinism, the planted group structure, the prepare path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ccrec import data
from ccrec.data import sparse_baselines, synthetic
from ccrec.data import synthetic_catalogs as sc
from ccrec.data.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = sc.RECIPE
SMALL = sc.CatalogSpec(
    num_items=300,
    train_examples=12_000,
    test_examples=1_500,
    mean_length=5.5,
    max_length=20,
    num_groups=30,
    follow=0.8,
)


def _build(**overrides):
  return sc.build("small", SMALL.replace(**overrides), RECIPE)


def test_statistics_are_the_requested_ones():
  ds = _build()
  st = ds.statistics()
  assert st["items"] == 300 and st["train_examples"] == 12_000
  assert st["test_examples"] == len(ds.test) == 1_500
  assert ds.train.lengths().min() >= 2 and ds.train.lengths().max() <= 20
  assert abs(ds.manifest["statistics"]["avg_length"] - 5.5) < 0.01
  # Every item occurs in the training-period sessions (train + validation), as after the
  # session protocol's id assignment.
  seen = np.zeros(301, bool)
  seen[ds.train.items] = True
  seen[ds.valid.prefixes.items] = True
  seen[ds.valid.targets] = True
  assert seen[1:].all()
  # A seeded 10% of the training-period sessions is validation, on top of the training examples.
  n = ds.manifest["statistics"]
  assert n["valid_sessions"] == round(n["train_sessions"] * 0.1 / 0.9)
  assert len(ds.valid) > 0 and n["test_sessions"] > 0
  assert ds.manifest["synthetic"] == SMALL.to_dict()


def test_deterministic_by_seed():
  a, b, c = _build(), _build(), _build(data_seed=1)
  np.testing.assert_array_equal(a.train.items, b.train.items)
  np.testing.assert_array_equal(a.test.targets, b.test.targets)
  assert not np.array_equal(a.train.items, c.train.items)
  # The validation seed chooses other sessions for validation; the sizes stay exact.
  d = sc.build("small", SMALL, RECIPE.replace(seed=5))
  assert d.statistics() == a.statistics()
  assert not np.array_equal(a.train.items, d.train.items)


def test_group_structure_is_planted_as_designed():
  structured, control = _build(structure=1.0), _build(structure=0.0)
  groups = sc.item_groups(SMALL)
  share_s = sc.within_group_share(structured.train, groups)
  share_c = sc.within_group_share(control.train, groups)
  # Chance: two independent popularity draws share a group.
  p = np.bincount(groups[1:], weights=sc.item_popularity(SMALL)[1:], minlength=30)
  chance = float(np.sum(p**2))
  # structure 1: a followed click (0.8) picks slot 0, the own group, 1 time in 4.
  designed = 0.8 / SMALL.group_successors
  assert abs(share_s - chance - designed) < 0.05, (share_s, chance)
  assert abs(share_c - chance) < 0.03, (share_c, chance)


def test_baselines_bound_the_signal_and_pooling_needs_the_structure():
  structured, control = _build(structure=1.0), _build(structure=0.0)
  groups = sc.item_groups(SMALL)
  for ds in (structured, control):
    assert sparse_baselines.markov_hit_rate(ds) > sparse_baselines.popularity_hit_rate(ds) + 0.02
  # Pooling transitions over groups helps only where items of a group behave alike.
  gain_s = sparse_baselines.group_markov_hit_rate(
      structured, groups
  ) - sparse_baselines.markov_hit_rate(structured)
  gain_c = sparse_baselines.group_markov_hit_rate(
      control, groups
  ) - sparse_baselines.markov_hit_rate(control)
  assert gain_s > 0.03 and gain_c < 0.0, (gain_s, gain_c)


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_baselines_equal_the_dense_ones(seed):
  ds = synthetic.synthetic_dataset(200, 1500, seed=seed)
  for split in ("valid", "test"):
    for k in (1, 10):
      assert sparse_baselines.markov_hit_rate(ds, k, split) == synthetic.markov_hit_rate(
          ds, k, split
      )
      assert sparse_baselines.popularity_hit_rate(ds, k, split) == (
          synthetic.popularity_hit_rate(ds, k, split)
      )
  ds = _build()
  assert sparse_baselines.markov_hit_rate(ds) == synthetic.markov_hit_rate(ds)


def test_presets():
  tmall = sc.PRESETS["synthetic-40k"]
  assert (
      tmall.num_items,
      tmall.train_examples,
      tmall.test_examples,
      tmall.mean_length,
      tmall.max_length,
  ) == (40_728, 351_268, 25_898, 6.69, 40)
  control = sc.PRESETS["synthetic-40k-unstructured"]
  assert control.structure == 0.0 and control.replace(structure=tmall.structure) == tmall
  assert (sc.PRESETS["synthetic-1m"].num_items + 1) % 64 == 0  # splits over a model axis


def test_prepare_path_caches_and_prints_the_table(tmp_path):
  small = {
      k: v
      for k, v in SMALL.to_dict().items()
      if k in ("num_items", "train_examples", "test_examples", "num_groups")
  }
  ds, out = data.prepare("synthetic-40k", data_dir=tmp_path, reader_options=small)
  assert out.parent == tmp_path / "processed" and out.name.startswith("synthetic-40k-session-")
  assert ds.statistics()["train_examples"] == 12_000 and ds.num_items == 300
  again = data.load_dataset("synthetic-40k", data_dir=tmp_path, reader_options=small)
  np.testing.assert_array_equal(again.train.items, ds.train.items)
  assert data.load(out).manifest["reader_options"] == small
  other, out2 = data.prepare(
      "synthetic-40k", data_dir=tmp_path, reader_options={**small, "structure": 0.0}
  )
  assert out2 != out and other.manifest["synthetic"]["structure"] == 0.0
  with pytest.raises(DataError, match=r"min_item_count.*do not apply"):
    data.prepare("synthetic-40k", data_dir=tmp_path, min_item_count=3)
  with pytest.raises(DataError, match="protocol 'session'"):
    data.prepare("synthetic-40k", data_dir=tmp_path, protocol="loo", reader_options=small)
  with pytest.raises(DataError, match="unknown synthetic catalog setting"):
    data.prepare("synthetic-40k", data_dir=tmp_path, reader_options={"groups": 3})
  # The launcher: one command, the statistics table printed as for ml-100k.
  env = dict(os.environ, PYTHONPATH=ROOT, CCREC_DATA_DIR=str(tmp_path))
  run = subprocess.run(
      [
          sys.executable,
          os.path.join(ROOT, "launch", "prepare_data.py"),
          "--dataset=synthetic-40k",
          "--num_groups=30",
          "--structure=0.5",
          f"--output={tmp_path / 'cli'}",
      ],
      env=env,
      capture_output=True,
      text=True,
      check=False,
      timeout=300,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  assert "| synthetic-40k | 351,268 |" in run.stdout and "| 25,898 | 40,728 | 6.69 |" in run.stdout
  manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
  assert manifest["synthetic"]["structure"] == 0.5 and manifest["synthetic"]["num_groups"] == 30


def test_bad_settings_name_the_field():
  with pytest.raises(DataError, match="structure"):
    SMALL.replace(structure=1.5)
  with pytest.raises(DataError, match="num_groups"):
    SMALL.replace(num_groups=0)
  with pytest.raises(DataError, match="mean_length"):
    SMALL.replace(mean_length=30.0)
  with pytest.raises(DataError, match="do not fit"):
    sc._lengths(10, 5, SMALL, np.random.default_rng(0))  # 5 examples cannot fill 10 sessions
