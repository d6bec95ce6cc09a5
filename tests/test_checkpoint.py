"""Checkpointer integrity: a checksum of the state, and shape checks before restoring."""

import glob
import json
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccrec.checkpoint import Checkpointer, CheckpointError, meta_digest


def _state(d=64):
  # Big enough (77 kB of table) that the largest data file is mostly array values.
  from ccrec.train.state import TrainState

  table = jnp.sin(jnp.arange(300 * d, dtype=jnp.float32)).reshape(300, d)
  params = {"table": table, "bias": jnp.ones(d)}
  return TrainState.create({"params": params}, optax.adam(1e-3))


def _saved(tmp_path):
  ck = Checkpointer(str(tmp_path / "ck"))
  ck.save(3, _state(), {"epoch": 1}, best=True)
  return ck


def _meta_file(tmp_path, which="best"):
  (path,) = glob.glob(str(tmp_path / "ck" / which / "3" / "meta" / "metadata"))
  return path


def test_round_trip_keeps_meta_and_values(tmp_path):
  restored, meta = _saved(tmp_path).restore(_state(), "best")
  assert meta == {"epoch": 1}  # the checksum is the checkpointer's own, not the caller's
  np.testing.assert_array_equal(restored.params["table"], _state().params["table"])


def test_changed_files_fail_the_checksum(tmp_path):
  ck = _saved(tmp_path)
  path = _meta_file(tmp_path)
  with open(path) as f:
    meta = json.load(f)
  meta["_state_checksum"] = "0" * 64  # as if the arrays no longer matched what was written
  meta["_meta_checksum"] = meta_digest(meta)  # and the meta were intact
  with open(path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(CheckpointError, match=r"fails its checksum \(of the restored arrays"):
    ck.restore(_state(), "best")
  ck.restore(_state(), "latest")  # the other copy is intact


def test_flipped_byte_in_the_arrays_is_an_error(tmp_path):
  ck = _saved(tmp_path)
  files = glob.glob(str(tmp_path / "ck" / "best" / "3" / "state" / "ocdbt.process_0" / "d" / "*"))
  biggest = max(files, key=os.path.getsize)
  data = bytearray(open(biggest, "rb").read())
  data[len(data) // 2] ^= 0x40
  with open(biggest, "wb") as f:
    f.write(bytes(data))
  with pytest.raises(CheckpointError, match="best checkpoint at step 3"):
    ck.restore(_state(), "best")


def test_checkpoint_without_a_checksum_still_restores(tmp_path):
  # Checkpoints written before the checksums existed.
  ck = _saved(tmp_path)
  path = _meta_file(tmp_path)
  with open(path) as f:
    meta = json.load(f)
  del meta["_state_checksum"], meta["_meta_checksum"]
  with open(path, "w") as f:
    json.dump(meta, f)
  _, got = ck.restore(_state(), "best")
  assert got == {"epoch": 1}


def test_other_model_is_refused_naming_the_array(tmp_path):
  ck = _saved(tmp_path)
  with pytest.raises(
      CheckpointError,
      match=r"params/table: stored \(300, 64\) float32, model "
      r"\(300, 32\) float32.*different model or dataset",
  ):
    ck.restore(_state(d=32), "best")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "uint8", "int32", "bool"])
def test_checksum_sees_any_single_bit(dtype):
  import jax

  from ccrec.checkpoint import state_digest

  rng = np.random.default_rng(0)
  a = (rng.integers(0, 2, (7, 5)) if dtype == "bool" else rng.normal(size=(7, 5)) * 50).astype(
      jnp.dtype(dtype)
  )
  tree = {"a": jnp.asarray(a), "key": jax.random.key(1)}
  base = state_digest(tree)
  assert base == state_digest({"a": jnp.asarray(a.copy()), "key": jax.random.key(1)})
  bits = 1 if dtype == "bool" else 8 * a.dtype.itemsize
  words = a.view(np.uint8) if dtype != "bool" else a.astype(np.uint8)
  for flat, bit in ((0, 0), (17, bits - 1), (34, bits // 2)):
    b = words.copy().ravel()
    if dtype == "bool":
      b[flat] ^= 1
      flipped = b.reshape(a.shape).astype(bool)
    else:
      byte = flat * a.dtype.itemsize + bit // 8
      b[byte] ^= np.uint8(1 << (bit % 8))
      flipped = b.view(a.dtype).reshape(a.shape)
    assert state_digest({"a": jnp.asarray(flipped), "key": jax.random.key(1)}) != base
  assert state_digest({"a": jnp.asarray(a), "key": jax.random.key(2)}) != base
  assert state_digest({"a": jnp.asarray(a).reshape(5, 7), "key": jax.random.key(1)}) != base


META = {
    "epoch": 1,
    "best": 0.5,
    "best_epoch": 0,
    "bad_epochs": 0,
    "done": False,
    "best_metrics": {"NDCG@10": 0.5},
}


def _saved_meta(tmp_path):
  ck = Checkpointer(str(tmp_path / "ck"))
  ck.save(3, _state(), META, best=True)
  return ck, _meta_file(tmp_path, "latest")


def _flip(path, offset, bit=0):
  data = bytearray(open(path, "rb").read())
  data[offset] ^= 1 << bit
  with open(path, "wb") as f:
    f.write(bytes(data))


@pytest.mark.parametrize("where", ['"epoch"', '"best": 0.5', '"bad_epochs": 0'])
def test_one_flipped_bit_in_the_meta_is_a_named_error(tmp_path, where):
  ck, path = _saved_meta(tmp_path)
  end = open(path).read().index(where) + len(where)
  _flip(path, end - 1 - where.endswith('"'))  # "epoch" -> "epoci", 0.5 -> 0.4, 0 -> 1
  json.load(open(path))  # still valid JSON: only the checksum tells
  with pytest.raises(
      CheckpointError,
      match=r"latest/3/meta/metadata fails its checksum.*delete "
      r".*/ck to train this stage again",
  ):
    ck.restore(_state(), meta_keys=META)
  assert ck.restore(_state(), "best", meta_keys=META)[1] == META  # the other copy is intact


def test_unreadable_meta_names_its_file(tmp_path):
  ck, path = _saved_meta(tmp_path)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match=r"latest/3/meta/metadata: not valid JSON"):
    ck.restore(_state())


def test_meta_without_checksums_is_checked_on_its_keys(tmp_path):
  # A checkpoint written before the meta checksum: its keys are what is left to check.
  ck, path = _saved_meta(tmp_path)
  meta = json.load(open(path))
  del meta["_meta_checksum"]
  meta["epocd"] = meta.pop("epoch")
  with open(path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(
      CheckpointError,
      match=r"meta/metadata is damaged: it lacks \['epoch'\]; it "
      r"holds unknown keys \['epocd'\]",
  ):
    ck.restore(_state(), meta_keys=META)


@pytest.mark.parametrize("target", ["state/manifest.ocdbt", "state/d/*"])
def test_restore_error_names_the_file_and_the_cause_in_a_few_lines(tmp_path, target):
  ck, _ = _saved_meta(tmp_path)
  (path,) = glob.glob(str(tmp_path / "ck" / "latest" / "3" / target))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(CheckpointError) as info:
    ck.restore(_state())
  message = str(info.value)
  assert path in message and len(message) < 800, message
  assert "tensorstore_spec" not in message and "'driver'" not in message
