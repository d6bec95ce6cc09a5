"""MovieLens-100k through load_dataset: RecBole's leave-one-out counts, exactly.

Reads the file $CCREC_ML100K_INTER names; skips, naming the variable, when it is
unset. Never touches the network.
"""

import collections

import numpy as np
import pytest

from ccrec.data import load_dataset, sources

import helpers

ML100K = helpers.ml100k_inter()
pytestmark = helpers.needs_ml100k


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
  cache = tmp_path_factory.mktemp("cache")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(sources.ENV_INTER, str(ML100K))
    mp.setattr(sources, "_from_grouplens", None)  # must not be reached
    mp.setattr(sources, "_from_recbole_wheel", None)
    ds = load_dataset("ml-100k", data_dir=cache)

    def not_again(*args, **kwargs):
      raise AssertionError("the second load parsed the raw file instead of the cached copy")

    mp.setattr(sources, "ml100k_inter", not_again)
    again = load_dataset("ml-100k", data_dir=cache)
  return ds, again


def test_recbole_loo_counts(ml100k):
  ds, _ = ml100k
  assert ds.num_items == 1682
  assert len(ds.train) == 943
  assert len(ds.valid) == 943 and len(ds.test) == 943
  assert len(ds.train_examples()) == 97_171
  st = ds.manifest["statistics"]
  assert (st["users"], st["train_examples"], st["valid_examples"], st["test_examples"]) == (
      943,
      97_171,
      943,
      943,
  )
  assert ds.manifest["sources"][0]["sha256"] == sources.ML100K_SHA256


def test_cached_copy_is_reused_and_identical(ml100k):
  ds, again = ml100k  # the fixture's second load may not touch the raw file
  np.testing.assert_array_equal(ds.train.items, again.train.items)
  np.testing.assert_array_equal(ds.test.targets, again.test.targets)


def test_matches_a_plain_python_leave_one_out(ml100k):
  ds, _ = ml100k
  rows = [line.split("\t") for line in ML100K.read_text().splitlines()[1:]]
  hist = collections.defaultdict(list)
  for i, (u, item, _, ts) in enumerate(rows):
    hist[u].append((float(ts), i, item))
  id_map = ds.manifest["id_map"]
  assert sorted(id_map.values()) == list(range(1, 1683))
  for k, user in enumerate(sorted(hist, key=int)):
    h = [id_map[item] for _, _, item in sorted(hist[user])]  # stable by (time, file row)
    assert ds.train[k].tolist() == h[:-2]
    assert ds.valid.targets[k] == h[-2] and ds.test.targets[k] == h[-1]
    assert ds.valid.prefixes[k].tolist() == h[:-2][-50:]
    assert ds.test.prefixes[k].tolist() == h[:-1][-50:]
