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
