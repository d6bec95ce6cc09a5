"""The teacher's jitted train step: compiles once, learns, window == prefix objective."""

import jax
import numpy as np
import optax
import pytest

from ccrec.data import Sequences, prefix_augment, prefix_batches, window_batches
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.ops import losses
from ccrec.train import teacher as teacher_lib
from ccrec.train.state import TrainState

SEQS = Sequences.from_lists([[1, 2, 3, 4, 5, 6], [7, 8, 9], [2, 4, 6, 8], [5, 3], [9, 8, 7, 6, 5]])


def _model(dropout=0.0):
  return SessionRecommender(
      ModelSpec(
          num_items=9,
          d=16,
          num_blocks=1,
          num_heads=2,
          inner=32,
          dropout=dropout,
          attn_dropout=dropout,
          max_len=8,
      )
  )


class _TraceCounting(SessionRecommender):
  """Counts its forward passes: at trace time inside a jitted step, so once per trace."""

  def __call__(self, *args, **kwargs):
    TRACES.append(1)
    return super().__call__(*args, **kwargs)


TRACES = []


def test_compiles_once_across_epochs():
  model = _TraceCounting(_model(0.1).spec)
  state = TrainState.create(init_variables(model, jax.random.key(0)), optax.adam(1e-2))
  step = teacher_lib.make_train_step(model, "window")
  TRACES.clear()  # init traced the model too
  after_each_step = []
  for epoch in range(3):
    for batch in window_batches(SEQS, 2, 8, seed=0, epoch=epoch):
      state, metrics = step(state, batch, jax.random.fold_in(jax.random.key(1), int(state.step)))
      after_each_step.append(len(TRACES))
  # One forward pass per trace of the plain step: traced at the first step, never again.
  assert after_each_step == [1] * 9, after_each_step
  assert int(state.step) == 9


def test_loss_decreases_on_repeated_batch():
  model = _model()
  step = teacher_lib.make_train_step(model, "window")
  state = TrainState.create(init_variables(model, jax.random.key(0)), optax.adam(1e-2))
  batch = next(window_batches(SEQS, 8, 8, shuffle=False))
  first = None
  for i in range(30):
    state, m = step(state, batch, jax.random.key(i))
    loss = float(m["teacher/ce"] / m["count"])
    first = loss if first is None else first
  assert loss < 0.5 * first
  assert float(m["count"]) == sum(len(s) - 1 for s in SEQS.to_lists())


@pytest.mark.slow
def test_window_and_prefix_objectives_give_the_same_loss():
  # Without dropout, the window objective's loss over all targets equals the mean of the
  # per-prefix losses (sequences shorter than max_len: one window each).
  model = _model()
  variables = init_variables(model, jax.random.key(0))

  def total(objective, batches):
    s_sum = c_sum = 0.0
    for batch in batches:
      _, s, t, w = teacher_lib.session_targets(
          model, variables, batch, objective=objective, key=None
      )
      logits = model.apply(variables, s, method="score")
      a, b = losses.softmax_cross_entropy_sums(logits, t, w)
      s_sum, c_sum = s_sum + float(a), c_sum + float(b)
    return s_sum / c_sum, c_sum

  win = total("window", window_batches(SEQS, 3, 8, shuffle=False))
  pre = total("prefix", prefix_batches(prefix_augment(SEQS), 4, 8))
  assert win[1] == pre[1] == 15
  np.testing.assert_allclose(win[0], pre[0], rtol=1e-5)


@pytest.mark.slow
def test_label_smoothing_is_the_loss_the_step_reports_and_descends():
  model = _model()
  variables = init_variables(model, jax.random.key(0))
  batch = next(window_batches(SEQS, 8, 8, shuffle=False))
  _, s, t, w = teacher_lib.session_targets(model, variables, batch, objective="window", key=None)
  logits = model.apply(variables, s, method="score")
  plain = float(losses.softmax_cross_entropy_sums(logits, t, w)[0])
  smoothed = float(losses.softmax_cross_entropy_sums(logits, t, w, 0.2)[0])
  assert abs(smoothed - plain) > 1e-3  # the setting changes the loss
  step = teacher_lib.make_train_step(model, "window", label_smoothing=0.2)
  state = TrainState.create(variables, optax.adam(1e-2))
  state, m = step(state, batch, jax.random.key(0))  # no dropout: the loss at the old params
  np.testing.assert_allclose(float(m["teacher/ce"]), smoothed, rtol=1e-5)
  for i in range(20):
    state, m = step(state, batch, jax.random.key(i))
  assert float(m["teacher/ce"]) < 0.7 * smoothed


def _pass_logits(model, params, batch, key, i):
  """The train step's i-th dropout pass over a window batch: (logits, targets, weights)."""
  v = {"params": params}
  _, s, t, w = teacher_lib.session_targets(
      model, v, batch, objective="window", key=jax.random.fold_in(key, i)
  )
  return model.apply(v, s, method="score"), t, w


def _assert_params_close(a, b, rtol, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.slow
def test_rdrop_without_dropout_is_the_plain_step():
  # Two passes without dropout give one distribution twice: the KL (symmetric or against
  # the detached pass) and its gradient are 0, and the step is the plain step's.
  model = _model()
  variables = init_variables(model, jax.random.key(0))
  batch = next(window_batches(SEQS, 8, 8, shuffle=False))
  plain = teacher_lib.make_train_step(model, "window", donate=False)
  state = TrainState.create(variables, optax.sgd(1.0))  # updates = gradients
  a, ma = plain(state, batch, jax.random.key(3))
  assert "teacher/rdrop" not in ma
  for detach in (False, True):
    step = teacher_lib.make_train_step(
        model, "window", donate=False, rdrop=1.0, rdrop_detach=detach
    )
    b, mb = step(state, batch, jax.random.key(3))
    assert float(mb["teacher/rdrop"]) == 0.0
    np.testing.assert_allclose(float(mb["teacher/ce"]), float(ma["teacher/ce"]), rtol=1e-6)
    _assert_params_close(a.params, b.params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", ["window", "prefix"])
@pytest.mark.parametrize("encoder", ["transformer", "gru4rec", "narm"])
def test_length_buckets_give_the_same_loss_as_max_len_batches(objective, encoder):
  # Batches cut to their longest row (length_bucket) hold the same rows without the
  # trailing padding columns: every encoder gives the same loss on them.
  spec = dict(num_items=9, d=16, num_blocks=1, num_heads=2, inner=32, max_len=8)
  spec.update(encoder=encoder, gru_hidden=12, readout="narm" if encoder == "narm" else "last")
  model = SessionRecommender(ModelSpec(**spec))
  variables = init_variables(model, jax.random.key(0))
  make = window_batches if objective == "window" else prefix_batches
  data = SEQS if objective == "window" else prefix_augment(SEQS)

  def total(**kw):
    s_sum = c_sum = 0.0
    widths = set()
    for batch in make(data, 2, 8, shuffle=True, seed=0, **kw):
      widths.add(batch["items"].shape[1])
      _, s, t, w = teacher_lib.session_targets(
          model, variables, batch, objective=objective, key=None
      )
      logits = model.apply(variables, s, method="score")
      a, b = losses.softmax_cross_entropy_sums(logits, t, w)
      s_sum, c_sum = s_sum + float(a), c_sum + float(b)
    return s_sum, c_sum, widths

  full, cut = total(), total(length_bucket=2)
  assert full[2] == {8} and max(cut[2]) < 8  # the cut batches are narrower
  assert cut[1] == full[1] == 15
  np.testing.assert_allclose(cut[0], full[0], rtol=1e-5)


@pytest.mark.slow
def test_rdrop_adds_the_weighted_symmetric_kl_of_two_dropout_passes():
  model = _model(dropout=0.3)
  variables = init_variables(model, jax.random.key(0))
  batch = next(window_batches(SEQS, 8, 8, shuffle=False))
  key = jax.random.key(5)

  def terms(params):  # by hand: two passes with the step's dropout keys
    (a, t, w), (b, _, _) = [_pass_logits(model, params, batch, key, i) for i in (0, 1)]
    ce = 0.5 * (
        losses.softmax_cross_entropy_sums(a, t, w)[0]
        + losses.softmax_cross_entropy_sums(b, t, w)[0]
    )
    kl = 0.5 * (losses.kl_soft_targets_sums(a, b, w)[0] + losses.kl_soft_targets_sums(b, a, w)[0])
    return ce, kl, w.sum()

  want_ce, want_kl, count = terms(variables["params"])
  assert float(want_kl) > 1e-6  # two dropout masks give two distributions
  step = teacher_lib.make_train_step(model, "window", donate=False, rdrop=2.0)
  new, m = step(TrainState.create(variables, optax.sgd(1.0)), batch, key)
  np.testing.assert_allclose(float(m["teacher/ce"]), float(want_ce), rtol=1e-5)
  np.testing.assert_allclose(float(m["teacher/rdrop"]), float(want_kl), rtol=1e-4, atol=1e-7)
  # The update is one SGD step on (ce + 2 kl) / count.
  grads = jax.grad(lambda p: (lambda ce, kl, n: (ce + 2.0 * kl) / n)(*terms(p)))(
      variables["params"]
  )
  want = jax.tree.map(lambda p, g: p - g, variables["params"], grads)
  _assert_params_close(new.params, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_detached_rdrop_pulls_the_first_pass_towards_a_fixed_second():
  model = _model(dropout=0.3)
  variables = init_variables(model, jax.random.key(0))
  batch = next(window_batches(SEQS, 8, 8, shuffle=False))
  key = jax.random.key(7)

  def loss(params):  # by hand: the first pass's cross-entropy + 2 KL(second || first)
    a, t, w = _pass_logits(model, params, batch, key, 0)
    b = jax.lax.stop_gradient(_pass_logits(model, variables["params"], batch, key, 1)[0])
    ce = losses.softmax_cross_entropy_sums(a, t, w)[0]
    kl = losses.kl_soft_targets_sums(b, a, w)[0]
    return (ce + 2.0 * kl) / w.sum(), (ce, kl)

  grads, (want_ce, want_kl) = jax.grad(loss, has_aux=True)(variables["params"])
  assert float(want_kl) > 1e-6
  step = teacher_lib.make_train_step(model, "window", donate=False, rdrop=2.0, rdrop_detach=True)
  new, m = step(TrainState.create(variables, optax.sgd(1.0)), batch, key)
  np.testing.assert_allclose(float(m["teacher/ce"]), float(want_ce), rtol=1e-5)
  np.testing.assert_allclose(float(m["teacher/rdrop"]), float(want_kl), rtol=1e-4, atol=1e-7)
  want = jax.tree.map(lambda p, g: p - g, variables["params"], grads)
  _assert_params_close(new.params, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "objective,rdrop,eps", [("window", 0.0, 0.2), ("window", 2.0, 0.1), ("prefix", 1.0, 0.0)]
)
def test_fused_step_is_the_reference_step(objective, rdrop, eps):
  # train.fused_chunk: the same loss, metrics and update (SGD: the gradients) as the step on
  # materialised logits, dropout on, with the chunk not dividing the rows.
  model = _model(dropout=0.3)
  variables = init_variables(model, jax.random.key(0))
  if objective == "window":
    batch = next(window_batches(SEQS, 8, 8, shuffle=False))
  else:
    batch = next(prefix_batches(prefix_augment(SEQS), 16, 8))
  state = TrainState.create(variables, optax.sgd(1.0))
  key = jax.random.key(11)
  kw = {"donate": False, "label_smoothing": eps, "rdrop": rdrop}
  want, mw = teacher_lib.make_train_step(model, objective, **kw)(state, batch, key)
  got, mg = teacher_lib.make_train_step(model, objective, fused_chunk=5, **kw)(state, batch, key)
  assert set(mg) == set(mw)
  for k in mw:
    np.testing.assert_allclose(float(mg[k]), float(mw[k]), rtol=1e-5, atol=1e-6)
  _assert_params_close(got.params, want.params, rtol=1e-4, atol=1e-6)


def test_fused_step_has_no_detached_rdrop():
  with pytest.raises(ValueError, match="rdrop_detach"):
    teacher_lib.make_train_step(_model(), "window", rdrop=1.0, rdrop_detach=True, fused_chunk=8)
