"""Every shipped config file loads, is locked and passes validation."""

import glob
import importlib.util
import os

import pytest

from ccrec import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_the_configs_directory_is_found():
  assert {"teacher.py", "eodrec.py", "tiny.py"} <= {os.path.basename(p) for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_config_file_validates_and_is_locked(path):
  c = _load(path)
  config_lib.validate(c)
  with pytest.raises(AttributeError):
    c.train.no_such_field = 1
