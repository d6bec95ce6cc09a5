"""configs/synthetic_*.py: the paper's settings on the generated catalogs, and what each
changes; the 40k config's dataset goes through the training data path."""

import os

import numpy as np

from ccrec import config as config_lib
from ccrec.data import synthetic_catalogs
from ccrec.workflow import workdir as workdir_lib
from ccrec.workflow.experiments import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flat(c, prefix=""):
  out = {}
  for k, v in c.items():
    out.update(_flat(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k: v})
  return out


def _load(name):
  c = load_config_file(os.path.join(ROOT, "configs", name))
  config_lib.validate(c)
  return c


def _changes(base, derived):
  a, b = _flat(_load(base)), _flat(_load(derived))
  assert set(a) == set(b)
  return {k: v for k, v in b.items() if a[k] != v}


def test_each_synthetic_config_changes_only_what_it_says():
  assert _changes("tmall.py", "synthetic_40k.py") == {
      "data.dataset": "synthetic-40k",
      "model.readout": "last",
      "student.eta_decay_epochs": 5,
      "codes.weight_power": 1.0,
  }
  assert _changes("synthetic_40k.py", "synthetic_40k_m3k256.py") == {
      "codes.num_codebooks": 3,
      "codes.codebook_size": 256,
  }
  assert _changes("synthetic_40k.py", "synthetic_1m.py") == {
      "data.dataset": "synthetic-1m",
      "codes.codebook_size": 256,
      "train.loss": "sampled",
      "train.num_negatives": 8192,
      "eval.item_chunk": 65_536,
      "codes.check_items": 65_536,
  }
  c = _load("synthetic_40k.py")
  assert (c.codes.num_codebooks, c.codes.codebook_size, c.data.protocol) == (4, 32, "session")
  for name in ("synthetic_40k.py", "synthetic_1m.py"):
    assert _load(name).data.dataset in synthetic_catalogs.PRESETS


def test_the_40k_dataset_loads_through_the_training_data_path(tmp_path):
  c = _load("synthetic_40k.py")
  with c.unlocked():
    c.data.data_dir = str(tmp_path)
  ds = workdir_lib.load_data(c)
  st = ds.statistics()
  assert (st["items"], st["train_examples"], st["test_examples"]) == (40_728, 351_268, 25_898)
  assert abs(ds.manifest["statistics"]["avg_length"] - 6.69) < 0.005
  assert ds.test.prefixes.lengths().max() <= c.data.max_len
  assert np.count_nonzero(ds.item_counts) > 0.99 * 40_728
