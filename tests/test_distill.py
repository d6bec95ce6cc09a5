"""The joint distillation step: every term, gradient routing, ablation switches."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ccrec.data import Sequences, window_batches
from ccrec.models.codes import set_codes
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.models.views import DistillHeads
from ccrec.ops import losses
from ccrec.train import distill as distill_lib
from ccrec.train import teacher as teacher_lib
from ccrec.train.state import TrainState

V, D, L = 12, 16, 6
SEQS = Sequences.from_lists(
    [[1, 2, 3, 4, 5, 6], [7, 8, 9], [2, 4, 6, 8], [10, 11, 12, 1], [9, 8, 7, 6, 5]]
)
HOT = np.zeros(V + 1, bool)
HOT[[1, 2, 8]] = True


def _configs(**distill):
  d = ml_collections.ConfigDict(
      dict(
          bidirectional=True,
          contrastive=True,
          soft_targets=True,
          beta=0.5,
          gamma=0.3,
          kd_temperature=1.0,
          con_temperature=0.2,
      )
  )
  d.update(distill)
  s = ml_collections.ConfigDict(dict(mixup=True, eta=0.8, mse_weight=1.0))
  return d, s


def _setup(tx=None, mse_weight=1.0, label_smoothing=0.0, **distill):
  spec = dict(
      num_items=V,
      d=D,
      num_blocks=1,
      num_heads=2,
      inner=32,
      dropout=0.1,
      attn_dropout=0.1,
      max_len=L,
  )
  teacher = SessionRecommender(ModelSpec(**spec))
  student = SessionRecommender(
      ModelSpec(**spec, embedding="codes", num_codebooks=2, codebook_size=4)
  )
  heads = DistillHeads(D)
  s_vars = init_variables(student, jax.random.key(1))
  codes = np.random.default_rng(0).integers(0, 4, (V + 1, 2))
  codes[0] = 0
  s_vars = set_codes(s_vars, codes)
  tx = tx or optax.adam(1e-2)
  state = distill_lib.create_state(
      init_variables(teacher, jax.random.key(0)), s_vars, heads, jax.random.key(2), L, tx
  )
  dc, sc = _configs(**distill)
  sc.mse_weight = mse_weight
  step = distill_lib.make_distill_step(
      teacher, student, heads, HOT, dc, sc, "window", label_smoothing=label_smoothing
  )
  batch = next(window_batches(SEQS, 8, L, shuffle=False))
  return state, step, batch


@functools.lru_cache(maxsize=None)
def _teacher_gradient_cached(settings):
  state, step, batch = _setup(tx=optax.scale(1.0), **dict(settings))
  before = jax.tree.map(np.array, state.teacher.params)
  new, _ = step(state, batch, jax.random.key(0))
  return jax.tree.map(lambda a, b: np.asarray(a) - b, new.teacher.params, before)


def _teacher_gradient(**settings):
  """The teacher's gradient in one distillation step: with optax.scale(1) the update IS it."""
  return _teacher_gradient_cached(tuple(sorted(settings.items())))


def _changed(a, b):
  return any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _assert_total_is_the_weighted_sum(m, dc, mse_weight=1.0):
  """docs/method.md §4: total = L_rec(student) + w L_mse [+ L_rec(teacher) if bidirectional]
  + gamma KL + beta InfoNCE, each switched-off term absent (all logged as sums over targets)."""
  want = float(m["student/ce"]) + mse_weight * float(m["codes/mse"])
  if dc.bidirectional:
    want += float(m["teacher/ce"])
  if dc.soft_targets:
    want += dc.gamma * float(m["kd/kl"])
  if dc.contrastive:
    want += dc.beta * float(m["kd/infonce"])
  assert float(m["total"]) == pytest.approx(want, rel=1e-5)


def test_full_step_logs_every_term_and_updates_all_three():
  state, step, batch = _setup()
  before = jax.tree.map(np.array, (state.teacher.params, state.student.params, state.heads.params))
  codes_before = np.array(jax.tree.leaves(state.student.consts)[0])
  new, m = step(state, batch, jax.random.key(0))
  for term in ("teacher/ce", "student/ce", "codes/mse", "kd/kl", "kd/infonce", "total"):
    assert np.isfinite(float(m[term])), term
  assert float(m["kd/kl"]) > 0 and float(m["kd/infonce"]) > 0
  _assert_total_is_the_weighted_sum(m, _configs()[0])
  assert _changed(before[0], new.teacher.params)
  assert _changed(before[1], new.student.params)
  assert _changed(before[2], new.heads.params)
  # The integer codes are constants: never touched by the optimizer.
  np.testing.assert_array_equal(codes_before, jax.tree.leaves(new.student.consts)[0])
  assert jax.tree.leaves(new.student.consts)[0].dtype == jnp.uint8


@pytest.mark.slow
def test_frozen_teacher_is_untouched():
  state, step, batch = _setup(bidirectional=False)
  before = jax.tree.map(np.array, state.teacher.params)
  new, m = step(state, batch, jax.random.key(0))
  assert not _changed(before, new.teacher.params)
  assert int(new.teacher.step) == 0 and int(new.student.step) == 1


@pytest.mark.slow
def test_contrastive_gradient_reaches_the_teacher():
  # Bidirectional transfer: InfoNCE adds to the teacher's gradient (its CE alone otherwise).
  with_con = _teacher_gradient(soft_targets=False, contrastive=True, beta=1.0)
  without = _teacher_gradient(soft_targets=False, contrastive=False)
  assert _changed(with_con, without)
  # The frozen teacher's case (no gradient at all) is test_frozen_teacher_is_untouched.


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"soft_targets": True}, {"mse_weight": 0.0}])
def test_soft_targets_and_reconstruction_leave_the_teacher_gradient_alone(settings):
  # Both terms hold the teacher fixed (stop_gradient): the KL's targets are the teacher's
  # distribution, L_mse pulls the codes toward the teacher table, never the reverse.
  base = _teacher_gradient(contrastive=False, soft_targets=False, mse_weight=1.0)
  other = _teacher_gradient(
      **{"contrastive": False, "soft_targets": False, "mse_weight": 1.0, **settings}
  )
  assert not _changed(base, other)
  assert _changed(base, jax.tree.map(np.zeros_like, base))  # the teacher does get a gradient


@pytest.mark.slow
@pytest.mark.parametrize(
    "switch,absent",
    [
        ({"contrastive": False}, "kd/infonce"),
        ({"soft_targets": False}, "kd/kl"),
        ({"bidirectional": False}, None),
    ],
)
def test_ablation_switches_remove_their_term(switch, absent):
  # Not only unlogged: the total is the sum of the remaining terms with their weights.
  state, step, batch = _setup(**switch)
  _, m = step(state, batch, jax.random.key(0))
  if absent:
    assert absent not in m
  _assert_total_is_the_weighted_sum(m, _configs(**switch)[0])


def test_mixup_weights_the_teacher_table():
  t = jnp.ones((3, 2))
  s = jnp.full((3, 2), 5.0)
  np.testing.assert_allclose(distill_lib.mixup_table(t, s, 0.8), np.full((3, 2), 1.8))
  np.testing.assert_allclose(distill_lib.mixup_table(t, s, 1.0), t)  # eta=1: the teacher table
  np.testing.assert_allclose(distill_lib.mixup_table(t, s, 0.0), s)


def test_pretrain_step_lowers_its_objective_and_keeps_codes():
  spec = dict(
      num_items=V,
      d=D,
      num_blocks=1,
      num_heads=2,
      inner=32,
      dropout=0.0,
      attn_dropout=0.0,
      max_len=L,
  )
  teacher = SessionRecommender(ModelSpec(**spec))
  student = SessionRecommender(
      ModelSpec(**spec, embedding="codes", num_codebooks=2, codebook_size=4)
  )
  t_table = teacher.apply(init_variables(teacher, jax.random.key(0)), method="table")
  state = TrainState.create(init_variables(student, jax.random.key(1)), optax.adam(1e-2))
  codes = np.array(jax.tree.leaves(state.consts)[0])
  codebooks = np.array(state.params["items"]["codebooks"])
  step = distill_lib.make_pretrain_step(student, "window", mixup=True, eta=0.8, mse_weight=1.0)
  batch = next(window_batches(SEQS, 8, L, shuffle=False))
  objective = []
  for i in range(20):
    state, m = step(state, t_table, batch, jax.random.key(i))
    objective.append(float((m["student/ce"] + m["codes/mse"]) / m["count"]))
  assert objective[-1] < objective[0]
  np.testing.assert_array_equal(codes, jax.tree.leaves(state.consts)[0])
  assert not np.allclose(codebooks, state.params["items"]["codebooks"])


def _zero_codebook_models():
  """Models without dropout; the student's composite table is all zeros, so its mixup table is
  exactly eta * teacher table, and at eta = 0 every item scores the same (CE = log V)."""
  spec = dict(
      num_items=V,
      d=D,
      num_blocks=1,
      num_heads=2,
      inner=32,
      dropout=0.0,
      attn_dropout=0.0,
      max_len=L,
  )
  teacher = SessionRecommender(ModelSpec(**spec))
  student = SessionRecommender(
      ModelSpec(**spec, embedding="codes", num_codebooks=2, codebook_size=4)
  )
  t_vars = init_variables(teacher, jax.random.key(0))
  s_vars = init_variables(student, jax.random.key(1))
  params = dict(s_vars["params"])
  params["items"] = {**params["items"], "codebooks": jnp.zeros_like(params["items"]["codebooks"])}
  return teacher, student, t_vars, dict(s_vars, params=params)


def test_pretrain_mixup_weight_falls_to_zero_after_its_steps():
  teacher, student, t_vars, s_vars = _zero_codebook_models()
  t_table = 50.0 * teacher.apply(t_vars, method="table")  # scores far from uniform at eta > 0
  state = TrainState.create(s_vars, optax.set_to_zero())  # frozen: only eta changes per step
  step = distill_lib.make_pretrain_step(
      student, "window", mixup=True, eta=0.8, mse_weight=0.0, eta_decay_steps=2
  )
  batch = next(window_batches(SEQS, 8, L, shuffle=False))
  ce = []
  for i in range(4):
    state, m = step(state, t_table, batch, jax.random.key(i))
    ce.append(float(m["student/ce"] / m["count"]))
  uniform = np.log(V)
  assert abs(ce[0] - uniform) > 0.01 and abs(ce[1] - uniform) > 0.01  # eta 0.8, then 0.4
  assert abs(ce[0] - ce[1]) > 0.01
  np.testing.assert_allclose(ce[2:], uniform, rtol=1e-6)  # eta reached 0: the composite alone


@pytest.mark.slow
@pytest.mark.parametrize("decay_epochs,uniform", [(5, True), (0, False)])
def test_distillation_trains_the_composite_alone_after_a_mixup_warm_up(decay_epochs, uniform):
  teacher, student, t_vars, s_vars = _zero_codebook_models()
  heads = DistillHeads(D)
  state = distill_lib.create_state(t_vars, s_vars, heads, jax.random.key(2), L, optax.set_to_zero())
  dc, sc = _configs(contrastive=False, soft_targets=False)
  sc.eta_decay_epochs = decay_epochs
  step = distill_lib.make_distill_step(teacher, student, heads, HOT, dc, sc, "window")
  batch = next(window_batches(SEQS, 8, L, shuffle=False))
  _, m = step(state, batch, jax.random.key(0))
  ce = float(m["student/ce"] / m["count"])
  assert np.isclose(ce, np.log(V), rtol=1e-6) == uniform


@pytest.mark.slow
def test_label_smoothing_reaches_both_recommendation_losses_only():
  # The smoothed loss is linear in eps: L(eps) = (1 - eps) L(0) + eps L(1), for the teacher's
  # and the student's L_rec; the soft targets, InfoNCE and reconstruction do not change.
  runs = {}
  for eps in (0.0, 1.0, 0.3):
    state, step, batch = _setup(label_smoothing=eps)
    runs[eps] = {k: float(v) for k, v in step(state, batch, jax.random.key(0))[1].items()}
  for term in ("teacher/ce", "student/ce"):
    assert abs(runs[1.0][term] - runs[0.0][term]) > 1e-3, term
    np.testing.assert_allclose(
        runs[0.3][term], 0.7 * runs[0.0][term] + 0.3 * runs[1.0][term], rtol=1e-5
    )
  for term in ("kd/kl", "kd/infonce", "codes/mse", "count"):
    np.testing.assert_allclose(runs[0.3][term], runs[0.0][term], rtol=1e-6)


@pytest.mark.slow
def test_pretrain_rdrop_and_fused_loss_are_the_reference_computation():
  # student.rdrop: the pre-training L_rec becomes R-Drop's (two dropout passes, mean CE +
  # alpha x symmetric KL); train.fused_chunk computes it without the logits. With SGD
  # (updates = gradients) the fused step equals the reference step, plain and with R-Drop,
  # and the R-Drop step equals one step on the loss written by hand.
  spec = dict(
      num_items=V,
      d=D,
      num_blocks=1,
      num_heads=2,
      inner=32,
      dropout=0.3,
      attn_dropout=0.3,
      max_len=L,
  )
  student = SessionRecommender(
      ModelSpec(**spec, embedding="codes", num_codebooks=2, codebook_size=4)
  )
  codes = np.random.default_rng(0).integers(0, 4, (V + 1, 2))
  codes[0] = 0
  s_vars = set_codes(init_variables(student, jax.random.key(1)), codes)
  t_table = jax.random.normal(jax.random.key(2), (V + 1, D))
  batch = next(window_batches(SEQS, 8, L, shuffle=False))
  key = jax.random.key(3)
  kw = dict(mixup=True, eta=0.5, mse_weight=1.0, label_smoothing=0.2)

  def run(**extra):
    step = distill_lib.make_pretrain_step(student, "window", **kw, **extra)
    return step(
        TrainState.create(jax.tree.map(jnp.copy, s_vars), optax.sgd(1.0)), t_table, batch, key
    )

  def close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)

  (plain, mp), (plain_f, mpf) = run(), run(fused_chunk=5)
  (rd, mr), (rd_f, mrf) = run(rdrop=2.0), run(rdrop=2.0, fused_chunk=5)
  assert "student/rdrop" not in mp and float(mr["student/rdrop"]) > 1e-6
  for a, b in ((mp, mpf), (mr, mrf)):
    assert set(a) == set(b)
    close({k: a[k] for k in a}, {k: b[k] for k in a})
  close(plain.params, plain_f.params)
  close(rd.params, rd_f.params)

  def loss(params):  # by hand, with the step's dropout keys
    v = dict(s_vars, params=params)
    composite, table = distill_lib.student_table_for_training(
        student, v, t_table, mixup=True, eta=0.5
    )
    k = jax.random.fold_in(key, 1)
    outs = [
        teacher_lib.session_targets(
            student, v, batch, objective="window", key=jax.random.fold_in(k, i), table=table
        )
        for i in (0, 1)
    ]
    logits = [student.apply(v, o[1], table=table, method="score") for o in outs]
    t, w = outs[0][2], outs[0][3]
    ce = 0.5 * sum(losses.softmax_cross_entropy_sums(x, t, w, 0.2)[0] for x in logits)
    kl = 0.5 * (
        losses.kl_soft_targets_sums(logits[0], logits[1], w)[0]
        + losses.kl_soft_targets_sums(logits[1], logits[0], w)[0]
    )
    return (ce + 2.0 * kl) / w.sum() + distill_lib.reconstruction(composite, t_table)

  grads = jax.grad(loss)(s_vars["params"])
  close(rd.params, jax.tree.map(lambda p, g: p - g, s_vars["params"], grads))
