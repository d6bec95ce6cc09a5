"""Every shipped config file loads, is locked and passes validation."""

import glob
import os

import pytest

from ccrec import config as config_lib
from ccrec.workflow.experiments import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def test_the_configs_directory_is_found():
  assert {"teacher.py", "eodrec.py", "tiny.py"} <= {os.path.basename(p) for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_config_file_validates_and_is_locked(path):
  c = load_config_file(path)
  config_lib.validate(c)
  with pytest.raises(AttributeError):
    c.train.no_such_field = 1


def _flat(c, prefix=""):
  out = {}
  for k, v in c.items():
    out.update(_flat(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k: v})
  return out


@pytest.mark.parametrize("name,changed", [
    ("tt.py", {"student.embedding": "tt"}),  # tt_rank 8 is the default
    ("teacher.py", {"stages": ("teacher",), "train.rdrop": 1.0, "train.fused_chunk": 128}),
])
def test_configs_that_vary_the_main_config_differ_from_it_only_where_they_say(name, changed):
  # A change to configs/eodrec.py reaches the configs derived from it: they cannot drift.
  main = _flat(load_config_file(os.path.join(ROOT, "configs", "eodrec.py")))
  derived = _flat(load_config_file(os.path.join(ROOT, "configs", name)))
  assert set(derived) == set(main)
  assert {k: v for k, v in derived.items() if main[k] != v} == changed
