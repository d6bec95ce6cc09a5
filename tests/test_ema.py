"""Moving-average (Polyak) weights of a TrainState and the student's `student.ema_decay`."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccrec.checkpoint import Checkpointer
from ccrec.models.build import model_fns
from ccrec.train.state import TrainState
from ccrec.workflow import pipeline
from ccrec.workflow.from_checkpoint import evaluate_workdir, restore_trained
from ccrec.workflow.workdir import load_config

from helpers import tiny


def _state(decay):
  return TrainState.create(
      {"params": {"w": jnp.zeros((2,))}, "consts": {"c": jnp.ones(())}},
      optax.sgd(1.0),
      ema_decay=decay,
  )


def test_ema_follows_the_warmed_up_recursion_and_is_what_variables_returns():
  decay, state = 0.9, _state(0.9)
  grads = [np.array([-1.0, 2.0]), np.array([3.0, 0.5]), np.array([-2.0, -4.0])] * 4
  w, ema = np.zeros(2), np.zeros(2)
  for t, g in enumerate(grads):
    state = state.apply_gradients({"w": jnp.asarray(g)})
    w = w - g
    d = min(decay, (1 + t) / (10 + t))
    ema = d * ema + (1 - d) * w
  np.testing.assert_allclose(state.params["w"], w, rtol=1e-6)
  np.testing.assert_allclose(state.ema["w"], ema, rtol=1e-5, atol=1e-6)
  assert not np.allclose(ema, w)  # the average lags the params
  np.testing.assert_array_equal(state.variables()["params"]["w"], state.ema["w"])
  np.testing.assert_array_equal(state.variables(state.params)["params"]["w"], state.params["w"])
  assert state.variables()["consts"]["c"] == 1.0


def test_without_ema_the_state_is_as_before():
  state = _state(0.0)
  assert state.ema is None
  state = state.apply_gradients({"w": jnp.ones((2,))})
  assert state.ema is None
  np.testing.assert_array_equal(state.variables()["params"]["w"], state.params["w"])
  assert len(jax.tree.leaves(state)) == 3  # step, w, consts: the old checkpoint layout


def test_ema_survives_a_checkpoint_and_a_jitted_donating_step(tmp_path):
  step = jax.jit(lambda s, g: s.apply_gradients(g), donate_argnums=(0,))
  state = _state(0.99)
  for _ in range(3):
    state = step(state, {"w": jnp.asarray([1.0, -1.0])})
  ck = Checkpointer(str(tmp_path / "ck"))
  ck.save(3, state, {"epoch": 1}, best=True)
  restored, _ = ck.restore(_state(0.99), "best")
  np.testing.assert_array_equal(restored.ema["w"], state.ema["w"])
  np.testing.assert_array_equal(restored.params["w"], state.params["w"])


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_bad_decay_is_refused(decay):
  with pytest.raises(ValueError, match="ema_decay"):
    _state(decay)


@pytest.mark.slow
def test_pipeline_selects_evaluates_and_restores_the_students_average(tmp_path, monkeypatch):
  from ccrec.train import distill as distill_lib

  handed = []
  create = distill_lib.create_state

  def recording(teacher_variables, student_variables, *args, **kwargs):
    handed.append(jax.tree.map(np.array, student_variables["params"]))
    return create(teacher_variables, student_variables, *args, **kwargs)

  monkeypatch.setattr(distill_lib, "create_state", recording)
  workdir = str(tmp_path / "w")
  metrics = pipeline.run(tiny(**{"student.ema_decay": 0.9}), workdir)
  ctx = pipeline.make_context(load_config(workdir), workdir, check_workdir=False)
  trained = restore_trained(ctx)
  student, teacher = trained.student, trained.teacher
  assert student.ema is not None and student.ema_decay == 0.9 and teacher.ema is None
  assert any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(student.params), jax.tree.leaves(student.ema))
  )
  # The training report, a later evaluation from the checkpoint and the average's own
  # metrics agree: the average is what was selected and evaluated, not the raw params.
  evaluated = evaluate_workdir(workdir)
  for key in ("student/test/NDCG@10", "student/valid/HR@20", "teacher/test/NDCG@10"):
    assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6)
  evaluator = ctx.evaluator("student", *model_fns(ctx.student))
  for params, same in ((student.ema, True), (student.params, False)):
    got = evaluator.evaluate(student.variables(params), "test", ctx.dataset.test)
    diffs = [abs(got[k] - metrics[k]) for k in got if k.startswith("student/test/")]
    assert (max(diffs) < 1e-6) == same
  # Distillation started from the pre-trained student's average.
  pre, _ = Checkpointer(ctx.stage_dir("student_pretrain")).restore(
      ctx.place(
          TrainState.create(pipeline.init_student(ctx, None), ctx.optimizer(), ema_decay=0.9)
      ),
      "best",
  )
  assert handed  # [0]: the distillation stage's (evaluation rebuilds abstract states after)
  jax.tree.map(np.testing.assert_array_equal, handed[0], jax.tree.map(np.array, pre.ema))
  assert any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(pre.params), jax.tree.leaves(pre.ema))
  )


def test_bad_ema_decay_in_the_config_names_the_field(tmp_path):
  with pytest.raises(Exception, match=r"student\.ema_decay"):
    pipeline.run(tiny(**{"student.ema_decay": 1.0}), str(tmp_path / "w"))
  assert not os.path.exists(str(tmp_path / "w" / "config.json"))
