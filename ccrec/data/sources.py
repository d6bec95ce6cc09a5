"""Obtaining raw MovieLens-100k: local copies first, then the network, always checksummed.

The canonical raw file is RecBole's `ml-100k.inter`: the typed header line
followed by GroupLens' u.data rows, byte for byte (sha256 below). Sources,
in order:

  1. an explicitly given local file (`.inter` or GroupLens `u.data`);
  2. $CCREC_ML100K_INTER, a local copy (the tests read ml-100k only from there);
  3. the verified copy in the cache, $CCREC_DATA_DIR/raw/ml-100k/ml-100k.inter;
  4. the GroupLens archive (ml-100k.zip, u.data);
  5. the recbole==1.2.1 wheel from PyPI (`pip download --no-deps`, read with zipfile;
     recbole is never installed).

A u.data source is turned into the .inter bytes (header + rows) before the
checksum, so every source is held to the same sha256.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

from ccrec import atomic
from ccrec.data.errors import DataError

ML100K_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
ML100K_HEADER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ENV_INTER = "CCREC_ML100K_INTER"
ENV_DATA_DIR = "CCREC_DATA_DIR"
TIMEOUT_S = 10


def data_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
  """The cache root: `override`, else $CCREC_DATA_DIR, else ~/.cache/ccrec."""
  if override is not None:
    return pathlib.Path(override).expanduser()
  return pathlib.Path(os.environ.get(ENV_DATA_DIR) or "~/.cache/ccrec").expanduser()


def _as_inter(data: bytes) -> bytes:
  """.inter bytes from either .inter or u.data bytes."""
  if data.startswith(b"user_id:token"):
    return data
  return ML100K_HEADER + data


def _verified(data: bytes, where: str) -> bytes:
  data = _as_inter(data)
  digest = hashlib.sha256(data).hexdigest()
  if digest != ML100K_SHA256:
    raise DataError(
        f"{where}: sha256 {digest} does not match MovieLens-100k's {ML100K_SHA256} "
        "(a different or corrupted file)"
    )
  return data


def _from_file(path) -> bytes:
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise DataError(f"{path}: file not found")
  return _verified(path.read_bytes(), str(path))


def _from_grouplens() -> bytes:
  with urllib.request.urlopen(GROUPLENS_URL, timeout=TIMEOUT_S) as response:
    archive = response.read()
  with zipfile.ZipFile(io.BytesIO(archive)) as z:
    return _verified(z.read("ml-100k/u.data"), f"{GROUPLENS_URL}!ml-100k/u.data")


def _from_recbole_wheel() -> bytes:
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--timeout",
        str(TIMEOUT_S),
        "--retries",
        "1",
        "-d",
        tmp,
        RECBOLE_WHEEL,
    ]
    try:
      run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
      raise DataError(f"`{' '.join(cmd[2:])}` timed out") from None
    if run.returncode != 0:
      tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
      raise DataError(f"`pip download {RECBOLE_WHEEL}` failed: {tail[0]}")
    wheels = sorted(pathlib.Path(tmp).glob("recbole-*.whl"))
    if not wheels:
      raise DataError(f"`pip download {RECBOLE_WHEEL}` produced no wheel")
    with zipfile.ZipFile(wheels[0]) as z:
      return _verified(z.read(RECBOLE_MEMBER), f"{wheels[0].name}!{RECBOLE_MEMBER}")


def ml100k_inter(
    path: str | os.PathLike | None = None,
    *,
    cache: str | os.PathLike | None = None,
    network: bool = True,
) -> pathlib.Path:
  """Path of a checksum-verified ml-100k.inter, fetching it into the cache if needed.

  Raises DataError naming every source tried and why each failed.
  """
  cached = data_dir(cache) / "raw" / "ml-100k" / "ml-100k.inter"
  tried: list[str] = []

  def local(candidate, label):
    try:
      data = _from_file(candidate)
    except (DataError, OSError) as e:
      tried.append(f"{label}: {e}")
      return None
    if pathlib.Path(candidate).expanduser().read_bytes()[:13] == b"user_id:token":
      return pathlib.Path(candidate).expanduser()
    return _store(cached, data)  # a u.data file: keep the .inter form in the cache

  if path is not None:
    found = local(path, "given file")
    if found is None:
      raise DataError("MovieLens-100k: " + "; ".join(tried))
    return found
  if os.environ.get(ENV_INTER):
    found = local(os.environ[ENV_INTER], f"${ENV_INTER}")
    if found is not None:
      return found
  if cached.is_file():
    found = local(cached, "cache")
    if found is not None:
      return found
  else:
    tried.append(f"cache: {cached} absent")
  if network:
    for fetch, label in (
        (_from_grouplens, GROUPLENS_URL),
        (_from_recbole_wheel, f"PyPI wheel {RECBOLE_WHEEL}"),
    ):
      try:
        return _store(cached, fetch())
      except (DataError, OSError, zipfile.BadZipFile, KeyError) as e:
        tried.append(f"{label}: {type(e).__name__}: {e}")
  raise DataError(
      "could not obtain MovieLens-100k; sources tried, in order:\n  " + "\n  ".join(tried)
  )


def _store(path: pathlib.Path, data: bytes) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic.write_bytes(path, data)
  return path
