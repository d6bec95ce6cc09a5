"""Tests for ccrec/ops/sampled.py and its wiring into the teacher, pre-training and distillation
steps (single device; the item-sharded mesh: tests/test_sharded_scale.py)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ccrec import config as config_lib
from ccrec.models.embeddings import mask_padding_column
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.models.views import DistillHeads, init_heads
from ccrec.ops import losses, sampled
from ccrec.train import distill as distill_lib
from ccrec.train import teacher as teacher_lib
from ccrec.train.state import TrainState

V, D, N = 9, 4, 6


def _setup(seed=0):
  rng = np.random.default_rng(seed)
  table = jnp.asarray(rng.normal(size=(V + 1, D)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
  targets = jnp.asarray([3, 1, 3, 7, 0, 9], jnp.int32)
  weights = jnp.asarray([1.0, 2.0, 1.0, 0.5, 0.0, 1.0])
  return table, s, targets, weights


def _full(s, table, targets, weights, eps):
  return losses.softmax_cross_entropy_sums(mask_padding_column(s @ table.T), targets, weights, eps)[
      0
  ]


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_all_items_as_candidates_with_uniform_q_equal_the_full_loss(eps):
  table, s, targets, weights = _setup()
  sampler = sampled.Sampler.uniform(V, 4)
  everything = jnp.arange(1, V + 1)

  def loss(s, table, correct):
    log_counts = sampler.log_counts(weights) if correct else None
    logits = sampled.candidate_logits(s, lambda ids: table[ids], targets, everything, log_counts)
    return sampled.cross_entropy_sums(logits, weights, eps)[0]

  want, want_grads = jax.value_and_grad(_full, argnums=(0, 1))(s, table, targets, weights, eps)
  for correct in (False, True):  # a uniform correction is one constant: it cancels
    got, got_grads = jax.value_and_grad(loss, argnums=(0, 1))(s, table, correct)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_all_items_as_candidates_give_the_full_soft_target_kl():
  table, s, targets, weights = _setup()
  t_table = table * 0.5 + 0.1
  everything = jnp.arange(1, V + 1)
  lookup = lambda tab: (lambda ids: tab[ids])
  t = sampled.candidate_logits(s, lookup(t_table), targets, everything)
  st = sampled.candidate_logits(s, lookup(table), targets, everything)
  got = sampled.kl_sums(t, st, weights, temperature=2.0)[0]
  want = losses.kl_soft_targets_sums(
      mask_padding_column(s @ t_table.T), mask_padding_column(s @ table.T), weights, 2.0
  )[0]
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_log_q_correction_by_hand():
  # Two rows, three candidates, Q from counts; every number written out.
  table = jnp.asarray([[0, 0], [1, 0], [0, 1], [1, 1], [2, -1]], jnp.float32)  # V = 4
  s = jnp.asarray([[1.0, 2.0], [0.5, -1.0]])
  targets = jnp.asarray([2, 4])
  weights = jnp.asarray([1.0, 1.0])
  counts = np.array([0, 1, 2, 3, 4])
  sampler = sampled.Sampler.from_counts(counts, num_negatives=3)
  candidates = jnp.asarray([2, 4, 1, 3, 3])  # the two targets, then draws (3 twice)
  logits = sampled.candidate_logits(
      s, lambda ids: table[ids], targets, candidates, sampler.log_counts(weights)
  )
  q = counts / 10.0
  expected_count = (2 + 3) * q  # two real targets + three draws
  raw = np.asarray(s) @ np.asarray(table).T  # [2, V + 1]
  for row, t in enumerate([2, 4]):
    want = [raw[row, t] - np.log(expected_count[t])]
    for c in [2, 4, 1, 3, 3]:
      want.append(-np.inf if c == t else raw[row, c] - np.log(expected_count[c]))
    np.testing.assert_allclose(np.asarray(logits[row]), want, rtol=1e-5)
    live = np.asarray(want)[np.isfinite(want)]
    ce = np.log(np.sum(np.exp(live))) - want[0]
    got = sampled.cross_entropy_sums(logits[row : row + 1], weights[row : row + 1])[0]
    np.testing.assert_allclose(got, ce, rtol=1e-5)
    eps = 0.2
    smooth = np.log(np.sum(np.exp(live))) - (1 - eps) * want[0] - eps * live.mean()
    got = sampled.cross_entropy_sums(logits[row : row + 1], weights[row : row + 1], eps)[0]
    np.testing.assert_allclose(got, smooth, rtol=1e-5)


def test_gradients_reach_only_candidate_rows():
  table, s, targets, weights = _setup()
  candidates = jnp.asarray([3, 1, 3, 7, 0, 9, 2, 2])  # targets (one filler: 0) + draws
  sampler = sampled.Sampler.from_counts(np.arange(V + 1), 2)

  def loss(table):
    logits = sampled.candidate_logits(
        s, lambda ids: table[ids], targets, candidates, sampler.log_counts(weights)
    )
    return sampled.cross_entropy_sums(logits, weights, 0.1)[0]

  grad = np.asarray(jax.grad(loss)(table))
  touched = set(np.flatnonzero(np.abs(grad).sum(axis=1) > 0).tolist())
  assert touched == {1, 2, 3, 7, 9}, touched  # row 0 (padding) gets nothing either


def test_duplicates_of_the_target_among_the_candidates_are_masked():
  table, s, targets, weights = _setup()
  lookup = lambda ids: table[ids]
  plain = jnp.asarray([2, 5, 8])
  with_hits = jnp.asarray([2, 3, 5, 3, 8, 9, 1, 7, 0])  # hits of rows' targets and padding
  a = sampled.candidate_logits(s, lookup, targets, plain)
  b = sampled.candidate_logits(s, lookup, targets, with_hits)
  # Row 0 (target 3): both 3s masked; the positive stays in column 0, once.
  assert np.isneginf(np.asarray(b[0, [2, 4, 9]])).all()
  assert np.isfinite(np.asarray(b[0, [0, 1, 3, 5, 6, 7, 8]])).all()
  # Masked columns add nothing: row 0's loss over {2, 5, 8} + {9, 1, 7} equals the loss over
  # the candidates written without the hits.
  c = sampled.candidate_logits(s, lookup, targets, jnp.asarray([2, 5, 8, 9, 1, 7]))
  np.testing.assert_allclose(
      sampled.cross_entropy_sums(b[:1], weights[:1])[0],
      sampled.cross_entropy_sums(c[:1], weights[:1])[0],
      rtol=1e-6,
  )
  assert a.shape == (N, 4)


def test_sampler_draws_by_popularity_and_its_log_q_is_its_own():
  counts = np.array([0, 10, 0, 30, 60])
  sampler = sampled.Sampler.from_counts(counts, 20_000)
  targets = jnp.asarray([4, 3, 0])
  weights = jnp.asarray([1.0, 1.0, 0.0])
  cand = np.asarray(sampler.draw(jax.random.key(0), targets, weights))
  np.testing.assert_array_equal(cand[:3], [4, 3, 0])  # the batch's targets, filler as 0
  freq = np.bincount(cand[3:], minlength=5) / 20_000
  np.testing.assert_allclose(freq, counts / 100, atol=0.015)
  assert freq[2] == 0 and freq[0] == 0
  np.testing.assert_allclose(
      np.exp(np.asarray(sampler.log_q))[[1, 3, 4]], [0.1, 0.3, 0.6], rtol=1e-6
  )
  assert np.isfinite(np.asarray(sampler.log_q)).all()
  np.testing.assert_allclose(
      sampler.log_counts(weights), sampler.log_q + np.log(20_002.0), rtol=1e-6
  )
  again = np.asarray(sampler.draw(jax.random.key(0), targets, weights))
  np.testing.assert_array_equal(cand, again)


# ---------------------------------------------------------------------------- the steps


L, B = 5, 4


def _models():
  spec = dict(
      num_items=V,
      d=8,
      num_blocks=1,
      num_heads=2,
      inner=16,
      dropout=0.1,
      attn_dropout=0.1,
      max_len=L,
  )
  return (
      SessionRecommender(ModelSpec(**spec)),
      SessionRecommender(ModelSpec(**spec, embedding="codes", num_codebooks=2, codebook_size=4)),
  )


def _batch():
  items = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [2, 2, 6, 1, 0], [1, 0, 0, 0, 0]])
  return {
      "items": jnp.asarray(items, jnp.int32),
      "target": jnp.asarray([4, 6, 9, 3], jnp.int32),
      "weight": jnp.asarray([1.0, 1.0, 1.0, 0.0]),
  }


def test_recommendation_loss_uses_the_drawn_candidates():
  teacher, _ = _models()
  variables = init_variables(teacher, jax.random.key(0))
  sampler = sampled.Sampler.from_counts(np.arange(V + 1) + 1, 5)
  batch, key = _batch(), jax.random.key(3)
  loss = jax.jit(
      lambda keys, **kw: teacher_lib.recommendation_loss(
          teacher, variables, batch, keys, objective="prefix", sampler=sampler, **kw
      ),
      static_argnames=("label_smoothing", "rdrop"),
  )
  total, terms, count = loss([key], label_smoothing=0.1)
  _, s, targets, weights = teacher_lib.session_targets(
      teacher, variables, batch, objective="prefix", key=key
  )
  cand = sampler.draw(key, targets, weights)
  lookup = lambda ids: teacher.apply(variables, ids, method="lookup")
  logits = sampled.candidate_logits(s, lookup, targets, cand, sampler.log_counts(weights))
  want = sampled.cross_entropy_sums(logits, weights, 0.1)[0]
  np.testing.assert_allclose(total, want, rtol=1e-6)
  assert float(count) == 3.0 and set(terms) == {"ce"}
  # R-Drop over the candidates: two passes, their symmetric KL logged.
  total, terms, _ = loss([key, jax.random.fold_in(key, 1)], rdrop=1.0)
  assert set(terms) == {"ce", "rdrop"} and float(terms["rdrop"]) > 0


def _changed_rows(before, after):
  return set(np.flatnonzero(np.abs(np.asarray(after) - np.asarray(before)).sum(axis=1) > 0))


def test_teacher_step_moves_only_the_rows_it_read():
  teacher, _ = _models()
  variables = jax.tree.map(np.asarray, init_variables(teacher, jax.random.key(0)))
  counts = np.zeros(V + 1)
  counts[[4, 5]] = 1.0  # draws can only be 4 or 5
  sampler = sampled.Sampler.from_counts(counts, 3)
  step = teacher_lib.make_train_step(teacher, "prefix", sampler=sampler)
  import optax

  state = TrainState.create(variables, optax.sgd(0.1))
  new, metrics = step(state, _batch(), jax.random.key(1))
  assert np.isfinite(float(metrics["teacher/ce"]))
  changed = _changed_rows(
      variables["params"]["items"]["embedding"], new.params["items"]["embedding"]
  )
  # Read: the input items (1..6), the real targets (4, 6, 9), the draws (4, 5); never 7, 8.
  assert changed <= {1, 2, 3, 4, 5, 6, 9} and 9 in changed, changed
  with pytest.raises(ValueError, match="fused_chunk"):
    teacher_lib.make_train_step(teacher, "prefix", fused_chunk=8, sampler=sampler)


def test_pretrain_and_distill_steps_train_on_the_candidates():
  teacher, student = _models()
  t_vars = jax.tree.map(np.asarray, init_variables(teacher, jax.random.key(0)))
  s_vars = jax.tree.map(np.asarray, init_variables(student, jax.random.key(1)))
  sampler = sampled.Sampler.from_counts(np.arange(V + 1), 4)
  import optax

  tx = optax.adam(1e-2)
  table = teacher.apply(jax.tree.map(jnp.asarray, t_vars), method="table")
  pre = distill_lib.make_pretrain_step(
      student, "prefix", mixup=True, eta=0.5, mse_weight=1.0, label_smoothing=0.1, sampler=sampler
  )
  _, metrics = pre(TrainState.create(s_vars, tx), table, _batch(), jax.random.key(2))
  assert np.isfinite(float(metrics["student/ce"]))
  heads = DistillHeads(8)
  dc = ml_collections.ConfigDict(
      {
          "bidirectional": True,
          "contrastive": False,
          "soft_targets": True,
          "beta": 0.0,
          "gamma": 0.3,
          "kd_temperature": 1.0,
          "con_temperature": 0.2,
      }
  )
  sc = ml_collections.ConfigDict({"mixup": False, "eta": 0.0, "mse_weight": 0.0})
  hot = np.zeros(V + 1, bool)
  hot[1:3] = True
  state = distill_lib.DistillState(
      teacher=TrainState.create(t_vars, optax.sgd(0.1)),
      student=TrainState.create(s_vars, optax.sgd(0.1)),
      heads=TrainState.create(init_heads(heads, jax.random.key(3), L), optax.sgd(0.1)),
  )
  step = distill_lib.make_distill_step(
      teacher, student, heads, hot, dc, sc, "prefix", sampler=sampler
  )
  new, metrics = step(state, _batch(), jax.random.key(4))
  for k in ("teacher/ce", "student/ce", "kd/kl"):
    assert np.isfinite(float(metrics[k])) and float(metrics[k]) > 0, k
  # The teacher's rows outside the batch's items, targets and draws never move.
  changed = _changed_rows(
      t_vars["params"]["items"]["embedding"], new.teacher.params["items"]["embedding"]
  )
  key = jax.random.split(jax.random.key(4), 2)[0]
  drawn = set(np.asarray(sampler.draw(key, _batch()["target"], _batch()["weight"])).tolist())
  assert changed <= {1, 2, 3, 4, 5, 6, 9} | drawn and 9 in changed, changed


def test_config_fields_validate():
  c = config_lib.base_config()
  assert (c.train.loss, c.train.num_negatives) == ("full", 1024)
  assert sampled.from_config(c.train, np.ones(V + 1)) is None
  c.train.loss = "sampled"
  config_lib.validate(c)
  assert sampled.from_config(c.train, np.ones(V + 1)).num_negatives == 1024
  for field, value, match in (
      ("loss", "softmax", "train.loss"),
      ("num_negatives", 0, "train.num_negatives"),
      ("fused_chunk", 64, "train.loss"),
  ):
    bad = config_lib.base_config()
    bad.train.loss = "sampled"
    bad.train[field] = value
    with pytest.raises(ValueError, match=match):
      config_lib.validate(bad)


@pytest.mark.slow
def test_pipeline_trains_every_stage_with_the_sampled_loss(tmp_path):
  import json
  import os

  from ccrec.workflow import pipeline

  from helpers import tiny

  workdir = str(tmp_path / "w")
  metrics = pipeline.run(
      tiny(
          **{
              "train.loss": "sampled",
              "train.num_negatives": 16,
              "train.label_smoothing": 0.1,
              "train.epochs": 1,
              "student.pretrain_epochs": 1,
              "distill.epochs": 1,
          }
      ),
      workdir,
  )
  for model in ("teacher", "student"):
    assert 0.0 <= metrics[f"{model}/test/NDCG@10"] <= 1.0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  logged = {k for r in rows for k in r}
  assert {"teacher/ce", "student/ce", "kd/kl"} <= logged
  assert all(np.isfinite(r[k]) for r in rows for k in ("teacher/ce", "kd/kl") if k in r)
