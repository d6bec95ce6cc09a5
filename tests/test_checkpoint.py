"""Checkpointer integrity: a checksum of the state, and shape checks before restoring."""

import glob
import json
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccrec.checkpoint import CheckpointError, Checkpointer


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
  with open(path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(CheckpointError, match="fails its checksum"):
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
  # Checkpoints written before the checksum existed.
  ck = _saved(tmp_path)
  path = _meta_file(tmp_path)
  with open(path) as f:
    meta = json.load(f)
  del meta["_state_checksum"]
  with open(path, "w") as f:
    json.dump(meta, f)
  _, got = ck.restore(_state(), "best")
  assert got == {"epoch": 1}


def test_other_model_is_refused_naming_the_array(tmp_path):
  ck = _saved(tmp_path)
  with pytest.raises(CheckpointError, match=r"params/table: stored \(300, 64\) float32, model "
                                            r"\(300, 32\) float32.*different model or dataset"):
    ck.restore(_state(d=32), "best")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "uint8", "int32", "bool"])
def test_checksum_sees_any_single_bit(dtype):
  import jax
  from ccrec.checkpoint import state_digest
  rng = np.random.default_rng(0)
  a = (rng.integers(0, 2, (7, 5)) if dtype == "bool" else rng.normal(size=(7, 5)) * 50
       ).astype(jnp.dtype(dtype))
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
