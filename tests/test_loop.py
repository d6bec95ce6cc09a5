"""The epoch loop: early stopping, best/latest checkpoints, NaN stop, resume."""

import math

import jax
import jax.numpy as jnp
import optax
import pytest

from ccrec.checkpoint import Checkpointer, CheckpointError
from ccrec.train.loop import NonFiniteLossError, fit
from ccrec.train.state import TrainState
from ccrec.train.writer import MetricWriter


def _state():
  return TrainState.create({"params": {"w": jnp.zeros(())}}, optax.sgd(1.0))


def _step(loss_at):
  def step(state, batch, key):
    del key
    new = state.replace(step=state.step + 1, params={"w": state.params["w"] + batch})
    return new, {
        "ce": jnp.asarray(loss_at(int(state.step)), jnp.float32),
        "count": jnp.asarray(1.0),
    }

  return step


def _fit(tmp_path, step, valid, epochs=10, patience=2):
  return fit(
      stage="t",
      state=_state(),
      train_step=step,
      batches=lambda e: [1.0, 1.0],
      evaluate=lambda s: {"v": valid(float(s.params["w"]))},
      select="v",
      checkpointer=Checkpointer(str(tmp_path / "ck")),
      writer=MetricWriter(str(tmp_path / "metrics.jsonl")),
      key=jax.random.key(0),
      epochs=epochs,
      patience=patience,
      log_every=100,
  )


def test_early_stopping_returns_the_best_epoch(tmp_path):
  # w grows by 2 per epoch; validation peaks at w = 4 (after epoch 2, index 1).
  result = _fit(tmp_path, _step(lambda s: 1.0), lambda w: -abs(w - 4.0))
  assert result.meta["best_epoch"] == 1 and result.meta["epoch"] == 4  # 2 bad epochs, stop
  assert float(result.state.params["w"]) == 4.0
  assert result.meta["done"]


def test_non_finite_loss_stops_with_step_and_term_and_keeps_last_good(tmp_path):
  step = _step(lambda s: math.nan if s == 3 else 1.0)
  with pytest.raises(NonFiniteLossError, match=r"'ce'.*step 2\.\.3"):
    _fit(tmp_path, step, lambda w: w)
  restored, meta = Checkpointer(str(tmp_path / "ck")).restore(_state())
  assert meta["epoch"] == 1 and float(restored.params["w"]) == 2.0


def test_finished_run_is_not_retrained(tmp_path):
  calls = []

  def step(state, batch, key):
    calls.append(1)
    return _step(lambda s: 1.0)(state, batch, key)

  _fit(tmp_path, step, lambda w: w, epochs=2)
  n = len(calls)
  again = _fit(tmp_path, step, lambda w: w, epochs=2)
  assert len(calls) == n and float(again.state.params["w"]) == 4.0


def test_killed_run_resumes_from_its_latest_epoch(tmp_path):
  # Killed during epoch 2 (its first step): the rerun restores epoch 1's checkpoint (w = 2)
  # and trains epochs 2-3 only (4 steps), instead of starting again from w = 0.
  calls = []

  def step(state, batch, key):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return _step(lambda s: 1.0)(state, batch, key)

  with pytest.raises(KeyboardInterrupt):
    _fit(tmp_path, step, lambda w: w, epochs=3, patience=10)
  resumed = _fit(tmp_path, step, lambda w: w, epochs=3, patience=10)
  assert len(calls) == 3 + 4
  assert float(resumed.state.params["w"]) == 6.0 and int(resumed.state.step) == 6
  assert resumed.meta["epoch"] == 3 and resumed.meta["done"]


def test_writer_starts_a_new_line_after_a_killed_runs_half_line(tmp_path):
  import json

  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write('{"stage": "t", "step": 1}\n{"stage": "t", "st')  # killed mid-write
  writer = MetricWriter(str(tmp_path / "metrics.jsonl"))
  writer.write("t", 2, {"ce": 1.0})
  writer.write("t", 3, {"ce": 0.5})
  with open(tmp_path / "metrics.jsonl") as f:
    lines = f.read().split("\n")
  assert lines[1] == '{"stage": "t", "st' and lines[-1] == ""
  assert [json.loads(line)["step"] for line in lines[2:-1]] == [2, 3]


def test_resume_with_a_damaged_meta_names_the_file_and_what_to_delete(tmp_path):
  import glob

  _fit(tmp_path, _step(lambda s: 1.0), lambda w: w, epochs=1)
  (path,) = glob.glob(str(tmp_path / "ck" / "latest" / "*" / "meta" / "metadata"))
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(text.replace('"epoch"', '"epoci"'))  # one flipped bit: h (0x68) -> i (0x69)
  with pytest.raises(
      CheckpointError,
      match=r"meta/metadata fails its checksum.*delete " r".*/ck to train this stage again",
  ):
    _fit(tmp_path, _step(lambda s: 1.0), lambda w: w, epochs=3)
