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


@pytest.mark.parametrize(
    "name,changed",
    [
        ("tt.py", {"student.embedding": "tt"}),  # tt_rank 8 is the default
        ("teacher.py", {"stages": ("teacher",), "train.rdrop": 1.0, "train.fused_chunk": 128}),
        ("gru4rec.py", {"model.encoder": "gru4rec", "model.dropout": 0.3}),  # readout 'last'
        (
            "narm.py",
            {
                "model.encoder": "narm",
                "model.readout": "narm",
                "model.dropout": 0.25,
                "model.readout_dropout": 0.5,
            },
        ),
    ],
)
def test_configs_that_vary_the_main_config_differ_from_it_only_where_they_say(name, changed):
  # A change to configs/eodrec.py reaches the configs derived from it: they cannot drift.
  main = _flat(load_config_file(os.path.join(ROOT, "configs", "eodrec.py")))
  derived = _flat(load_config_file(os.path.join(ROOT, "configs", name)))
  assert set(derived) == set(main)
  assert {k: v for k, v in derived.items() if main[k] != v} == changed


def _float_fields(c, prefix=""):
  for key, value in c.items():
    if hasattr(value, "items"):
      yield from _float_fields(value, f"{prefix}{key}.")
    elif isinstance(value, float):
      yield f"{prefix}{key}"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_every_float_field_must_be_finite(value):
  fields = list(_float_fields(config_lib.base_config()))
  assert {"train.learning_rate", "codes.temperature", "distill.beta"} <= set(fields)
  for field in fields:
    c = config_lib.base_config()
    section, name = field.rsplit(".", 1)
    c[section][name] = value
    with pytest.raises(config_lib.ConfigError, match=rf"config\.{field}: must be a finite "):
      config_lib.validate(c)


@pytest.mark.parametrize("field", ["train.learning_rate", "codes.temperature"])
def test_non_finite_value_is_refused_before_the_workdir_is_written(tmp_path, field):
  from ccrec.workflow import pipeline

  from helpers import tiny

  workdir = tmp_path / "w"
  with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")):
    pipeline.run(tiny(**{field: float("inf")}), str(workdir))
  assert not workdir.exists()  # so the corrected command may use the same workdir
