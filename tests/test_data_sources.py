"""Tests for ccrec/data/sources.py, offline: every source path, checksum, error messages."""

import io
import pathlib
import zipfile

import pytest

from ccrec.data import sources
from ccrec.data.errors import DataError

import helpers

FIX = pathlib.Path(__file__).parent / "fixtures"
ML100K = helpers.ml100k_inter()  # read before `offline` unsets the variable


@pytest.fixture
def offline(monkeypatch, tmp_path):
  """No env var, network sources that fail loudly if not replaced."""
  monkeypatch.delenv(sources.ENV_INTER, raising=False)

  def unreachable(*args, **kwargs):
    raise OSError("network unreachable (test)")

  monkeypatch.setattr(sources.urllib.request, "urlopen", unreachable)
  monkeypatch.setattr(sources.subprocess, "run", unreachable)
  return tmp_path / "cache"


def test_every_source_failing_names_each_one(offline):
  with pytest.raises(DataError) as e:
    sources.ml100k_inter(cache=offline)
  message = str(e.value)
  for part in ("cache:", sources.GROUPLENS_URL, "recbole==1.2.1", "unreachable"):
    assert part in message
  assert "shared copy" not in message  # nothing beside the repository is looked at


def test_checksum_mismatch_is_an_error(offline, monkeypatch):
  with pytest.raises(DataError, match=r"sample.inter: sha256 [0-9a-f]{64} does not match"):
    sources.ml100k_inter(FIX / "sample.inter", cache=offline)
  monkeypatch.setenv(sources.ENV_INTER, str(FIX / "sample.inter"))
  with pytest.raises(DataError, match=r"\$CCREC_ML100K_INTER: .*sample.inter: sha256"):
    sources.ml100k_inter(cache=offline)


def test_data_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.setenv(sources.ENV_DATA_DIR, str(tmp_path))
  assert sources.data_dir() == tmp_path
  assert sources.data_dir("/x") == pathlib.Path("/x")
  monkeypatch.delenv(sources.ENV_DATA_DIR)
  assert sources.data_dir() == pathlib.Path("~/.cache/ccrec").expanduser()


@helpers.needs_ml100k
def test_local_inter_and_udata(offline, monkeypatch, tmp_path):
  assert sources.ml100k_inter(ML100K, cache=offline) == ML100K
  udata = tmp_path / "u.data"
  udata.write_bytes(ML100K.read_bytes()[len(sources.ML100K_HEADER) :])
  cached = sources.ml100k_inter(udata, cache=offline)
  assert cached == offline / "raw/ml-100k/ml-100k.inter"
  assert cached.read_bytes() == ML100K.read_bytes()
  assert sources.ml100k_inter(cache=offline) == cached  # now found in the cache
  monkeypatch.setenv(sources.ENV_INTER, str(ML100K))
  assert sources.ml100k_inter(cache=tmp_path / "other") == ML100K


@helpers.needs_ml100k
def test_grouplens_archive(offline, monkeypatch):
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("ml-100k/u.data", ML100K.read_bytes()[len(sources.ML100K_HEADER) :])

  class Response(io.BytesIO):

    def __enter__(self):
      return self

    def __exit__(self, *args):
      return False

  seen = {}

  def urlopen(url, timeout):
    seen.update(url=url, timeout=timeout)
    return Response(buf.getvalue())

  monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
  path = sources.ml100k_inter(cache=offline)
  assert path.read_bytes() == ML100K.read_bytes()
  assert seen == {"url": sources.GROUPLENS_URL, "timeout": 10}


@helpers.needs_ml100k
def test_recbole_wheel(offline, monkeypatch):
  commands = []

  def run(cmd, **kwargs):
    commands.append(cmd)
    out = pathlib.Path(cmd[cmd.index("-d") + 1])
    with zipfile.ZipFile(out / "recbole-1.2.1-py3-none-any.whl", "w") as z:
      z.writestr(sources.RECBOLE_MEMBER, ML100K.read_bytes())
    return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

  monkeypatch.setattr(sources.subprocess, "run", run)
  path = sources.ml100k_inter(cache=offline)
  assert path.read_bytes() == ML100K.read_bytes()
  (cmd,) = commands
  assert cmd[-1] == "recbole==1.2.1" and "--no-deps" in cmd and "download" in cmd
