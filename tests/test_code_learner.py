"""Tests for ccrec.models.code_learner and ccrec.train.code_learning.

'rbg' keys: threefry kernels compile slowly on small CPUs; the properties
tested do not depend on the generator.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.models.code_learner import CodeLearner
from ccrec.train import code_learning, code_refinement

_key = functools.partial(jax.random.key, impl="rbg")

M, K, D = 2, 4, 6
LEARNER = CodeLearner(M, K, D, temperature=0.5)


@jax.jit
def _outputs(variables, x, key):
  """Everything the module computes for x [N, d], in one compiled program."""

  def call(method, **kwargs):
    return LEARNER.apply(variables, x, method=method, **kwargs)

  return {
      "log_alpha": call("log_alpha"),
      "codes": call("codes"),
      "train": call("__call__", train=True, rngs={"gumbel": key}),
      "eval": call("__call__", train=False),
  }


@pytest.fixture(scope="module")
def setup():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(32, D)), jnp.float32)
  variables = jax.jit(LEARNER.init)(_key(0), x[:1])
  return variables, x


def _all_sums(codebooks):
  """[K^M, d] every sum of one codeword per codebook."""
  return np.stack(
      [
          sum(codebooks[m, k] for m, k in enumerate(ks))
          for ks in itertools.product(range(K), repeat=M)
      ]
  )


# --- the module ------------------------------------------------------------------------


def test_parameters_and_code_distribution(setup):
  variables, x = setup
  params = variables["params"]
  assert params["codebooks"].shape == (M, K, D)
  assert params["hidden"]["kernel"].shape == (D, M * K // 2)
  assert params["logits"]["kernel"].shape == (M * K // 2, M * K)
  out = _outputs(variables, x, _key(1))
  log_alpha = out["log_alpha"]
  assert log_alpha.shape == (32, M, K)
  np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(log_alpha, -1)), 0.0, atol=1e-5)
  codes = out["codes"]
  assert codes.dtype == jnp.uint8 and codes.shape == (32, M)
  np.testing.assert_array_equal(np.asarray(codes), np.asarray(log_alpha.argmax(-1)))
  wide = jax.eval_shape(
      lambda v: CodeLearner(1, 300, D).apply(v, x, method="codes"),
      jax.eval_shape(CodeLearner(1, 300, D).init, _key(0), x[:1]),
  )
  assert wide.dtype == jnp.uint16


def test_reconstructions_are_sums_of_one_codeword_per_codebook(setup):
  variables, x = setup
  books = np.asarray(variables["params"]["codebooks"])
  sums = _all_sums(books)
  out, other = _outputs(variables, x, _key(2)), _outputs(variables, x, _key(9))
  train = np.asarray(out["train"])
  distance = np.abs(train[:, None, :] - sums[None]).max(-1).min(-1)
  assert distance.max() < 1e-5
  # Eval mode: exactly the argmax codes, no noise.
  evaluated = np.asarray(out["eval"])
  codes = np.asarray(out["codes"]).astype(int)
  np.testing.assert_allclose(evaluated, books[np.arange(M), codes].sum(1), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(evaluated, np.asarray(other["eval"]))


def test_gumbel_stream_determinism_and_straight_through_gradients(setup):
  variables, x = setup
  a = _outputs(variables, x, _key(3))["train"]
  b = _outputs(variables, x, _key(3))["train"]
  c = _outputs(variables, x, _key(4))["train"]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(c))

  @jax.jit
  def grads(params):
    def loss(p, train):
      recon = LEARNER.apply({"params": p}, x, train=train, rngs={"gumbel": _key(5)})
      return jnp.mean(jnp.sum((recon - x) ** 2, -1))

    return jax.grad(loss)(params, True), jax.grad(loss)(params, False)

  g_train, g_eval = grads(variables["params"])
  for layer in ("hidden", "logits"):
    assert float(jnp.abs(g_train[layer]["kernel"]).max()) > 0  # straight-through
    assert float(jnp.abs(g_eval[layer]["kernel"]).max()) == 0  # argmax: no gradient
  assert float(jnp.abs(g_train["codebooks"]).max()) > 0


# --- code_report -------------------------------------------------------------------------


def test_code_report_hand_made():
  codes = np.array([[0, 0], [0, 1], [0, 1], [1, 2], [0, 1]], np.uint8)  # row 0: padding
  report = code_learning.code_report(codes, 3)
  np.testing.assert_array_equal(report["usage"], [[3, 1, 0], [0, 3, 1]])
  np.testing.assert_array_equal(report["dead_codewords"], [1, 1])
  expected = np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
  np.testing.assert_allclose(report["perplexity"], [expected, expected])
  assert report["collisions"] == 3 and report["unique_codes"] == 2
  assert report["num_items"] == 4 and report["total_dead_codewords"] == 2
  assert isinstance(report["collisions"], int) and isinstance(report["mean_perplexity"], float)
  uniform = code_learning.code_report(np.array([[0], [1], [2], [3]]), 4, skip_padding_row=False)
  np.testing.assert_allclose(uniform["perplexity"], [4.0])
  assert uniform["collisions"] == 0 and uniform["unique_codes"] == 4


# --- learn_codes ---------------------------------------------------------------------------

# Planted: 2 codebooks of 4 codewords. The learner gets 16 codewords per codebook
# (hence MK/2 = 16 hidden units) and tau = 1: the tiny exactly-specified
# learner with tau = 0.3 often stalls in a local minimum (20-40% of the
# variance) within a test's step budget; with this setting it reaches < 7%
# for every seed tried.
PLANTED = {"num_items": 128, "M": 2, "K": 4, "d": 16}
SETTINGS = {
    "num_codebooks": 2,
    "codebook_size": 16,
    "temperature": 1.0,
    "learning_rate": 1e-2,
    "batch_size": 64,
    "eval_every": 100,
}


@functools.cache
def _planted_parts(seed=0):
  """(table, codes): table = sum of planted codewords + small noise, row 0 padding; codes
  int [num_items, M] are the planted codes of rows 1..num_items."""
  rng = np.random.default_rng(seed)
  v, m, k, d = PLANTED.values()
  books = rng.normal(size=(m, k, d))
  codes = rng.integers(0, k, size=(v, m))
  table = books[np.arange(m), codes].sum(1) + 0.01 * rng.normal(size=(v, d))
  return np.concatenate([np.full((1, d), 7.0), table]).astype(np.float32), codes


def _planted(seed=0):
  return _planted_parts(seed)[0]


@pytest.fixture(scope="module")
def learned():
  return code_learning.learn_codes(
      _planted(), max_steps=1500, patience=100, tolerance=1e-3, seed=_key(0), **SETTINGS
  )


def test_learning_recovers_planted_codes(learned):
  table = _planted()[1:]
  variance = np.mean(np.sum((table - table.mean(0)) ** 2, axis=1))
  assert learned.report["table_variance"] == pytest.approx(variance, rel=1e-5)
  assert learned.report["mse"] < 0.01 * variance  # the planted noise alone is 0.05%
  assert learned.history[0] > learned.report["mse"]
  # Recovered: items given the same learned code share their planted code (the learned
  # codes refine the planted partition; codewords may be renumbered or split).
  planted = _planted_parts()[1]
  owner = {}
  for got, want in zip(map(tuple, learned.codes[1:]), map(tuple, planted)):
    assert owner.setdefault(got, want) == want


def test_result_layout_and_consistency(learned):
  codes, books = learned.codes, learned.codebooks
  assert codes.shape == (129, 2) and codes.dtype == np.uint8
  assert (codes[0] == 0).all() and codes.max() < 16
  assert books.shape == (2, 16, 16) and books.dtype == np.float32
  # The reported error is the error of these codes with these codebooks.
  recon = books[np.arange(2), codes[1:].astype(int)].sum(1)
  mse = np.mean(np.sum((recon - _planted()[1:]) ** 2, axis=1))
  assert learned.report["mse"] == pytest.approx(mse, rel=1e-4)
  assert learned.report["mse"] == pytest.approx(min(learned.history), rel=1e-6)
  assert learned.report["steps"] == 1500 and len(learned.history) == 15
  assert not learned.report["stopped_early"]
  np.testing.assert_array_equal(learned.report["usage"].sum(1), [128, 128])


def test_stopping_rule_stops_after_patience_checks():
  # tolerance 1: no check can improve by 100%, so it stops after 1 + patience checks.
  result = code_learning.learn_codes(
      _planted(), max_steps=10_000, patience=2, tolerance=1.0, seed=_key(1), **SETTINGS
  )
  assert len(result.history) == 3 and result.report["steps"] == 300
  assert result.report["stopped_early"] and result.report["best_step"] == 100
  assert result.report["mse"] == result.history[0]


def test_max_steps_is_honoured_when_not_a_multiple_of_eval_every():
  result = code_learning.learn_codes(
      _planted(), max_steps=250, patience=100, seed=_key(2), **SETTINGS
  )
  assert result.report["steps"] == 250 and len(result.history) == 3
  assert not result.report["stopped_early"]


def test_non_finite_table_fails_loudly():
  table = _planted().copy()
  table[5, 3] = np.nan
  with pytest.raises(FloatingPointError, match="step 100"):
    code_learning.learn_codes(table, max_steps=100, patience=1, seed=_key(3), **SETTINGS)


def test_refit_codebooks_is_exact_for_planted_codes():
  from ccrec.train.code_refinement import refit_codebooks

  rng = np.random.default_rng(0)
  m, k, d, v = 3, 5, 4, 200
  books = rng.normal(size=(m, k, d))
  codes = rng.integers(0, k, (v + 1, m))
  codes[0] = 0
  table = sum(books[j][codes[:, j]] for j in range(m))
  table[0] = 0
  fitted, mse = refit_codebooks(table, codes, k)
  assert fitted.shape == (m, k, d) and fitted.dtype == np.float32
  assert mse < 1e-10
  recon = sum(fitted[j][codes[1:, j]] for j in range(m))
  np.testing.assert_allclose(recon, table[1:], atol=1e-4)


def test_refine_codes_never_worsens_and_breaks_collisions():
  from ccrec.train.code_learning import code_report
  from ccrec.train.code_refinement import refine_codes, refit_codebooks

  rng = np.random.default_rng(1)
  m, k, d, v = 2, 8, 6, 300
  books = rng.normal(size=(m, k, d))
  planted = rng.integers(0, k, (v + 1, m))
  planted[0] = 0
  table = sum(books[j][planted[:, j]] for j in range(m)) + 0.01 * rng.normal(size=(v + 1, d))
  table[0] = 0
  # A collapsed start: every item on the same code (the low-temperature failure mode).
  start = np.zeros((v + 1, m), np.uint8)
  _, start_mse = refit_codebooks(table, start, k)
  codes, fitted, history = refine_codes(table, start, k, iterations=30)
  assert codes.dtype == np.uint8 and codes.shape == (v + 1, m) and not codes[0].any()
  assert all(b <= a + 1e-9 for a, b in zip([start_mse] + history, history))
  assert history[-1] < 0.2 * start_mse
  assert code_report(codes, k)["collisions"] < code_report(start, k)["collisions"]


def test_deduplicate_codes_gives_every_item_its_own_code_at_least_cost():
  from ccrec.train.code_learning import code_report
  from ccrec.train.code_refinement import deduplicate_codes

  rng = np.random.default_rng(2)
  m, k, d, v = 2, 8, 5, 12
  books = rng.normal(size=(m, k, d)).astype(np.float32)
  codes = np.zeros((v + 1, m), np.uint8)
  codes[1:] = rng.integers(0, k, (v, m))
  codes[1:5] = (1, 2)  # four items share a code
  table = np.zeros((v + 1, d), np.float32)
  table[1:] = sum(books[j][codes[1:, j]] for j in range(m)) + 0.3 * rng.normal(size=(v, d))
  before = codes.copy()
  out, left = deduplicate_codes(table, codes, books)
  assert left == 0 and out.dtype == np.uint8 and not out[0].any()
  assert code_report(out, k)["collisions"] == 0
  np.testing.assert_array_equal(codes, before)  # the input is not modified
  # Items that already had their own code keep it.
  _, inverse, counts = np.unique(before[1:], axis=0, return_inverse=True, return_counts=True)
  alone = counts[inverse.ravel()] == 1
  np.testing.assert_array_equal(out[1:][alone], before[1:][alone])
  # Of each shared code, the best reconstructed item keeps it; each moved item
  # takes the cheapest free code by brute force over all K^M codes.
  err = lambda row, c: float(np.sum((sum(books[j][c[j]] for j in range(m)) - table[row]) ** 2))
  group = [i for i in range(1, v + 1) if tuple(before[i]) == (1, 2)]
  keeper = min(group, key=lambda i: err(i, before[i]))
  assert tuple(out[keeper]) == (1, 2)
  taken = {tuple(c) for c in out[1:]}
  for i in group:
    if i == keeper:
      continue
    assert tuple(out[i]) != (1, 2)
    # One-codeword moves are tried first: the moved item's code is the cheapest
    # free code among those differing from (1, 2) in one codebook.
    neighbours = [c for c in ((a, 2) for a in range(k)) if c != (1, 2)] + [
        c for c in ((1, b) for b in range(k)) if c != (1, 2)
    ]
    free_at_end = [c for c in neighbours if c == tuple(out[i]) or c not in taken]  # free then too
    assert tuple(out[i]) in neighbours
    assert err(i, out[i]) <= min(err(i, c) for c in free_at_end) + 1e-5


def test_deduplicate_codes_reports_what_cannot_be_resolved():
  from ccrec.train.code_refinement import deduplicate_codes
  # 5 items but only K^M = 4 codes: one item must keep sharing.
  books = np.eye(2, dtype=np.float32)[None].repeat(2, 0)  # M=2, K=2, d=2
  codes = np.zeros((6, 2), np.uint8)
  table = np.ones((6, 2), np.float32)
  out, left = deduplicate_codes(table, codes, books)
  assert left == 1
  assert len({tuple(c) for c in out[1:]}) == 4


# ---------------------------------------------------------------------------- item weights


def test_popularity_weights():
  counts = np.array([0, 4, 1, 0, 9])  # row 0 padding; item 3 never seen counts as 1
  assert code_refinement.popularity_weights(counts, 0.0) is None
  w = code_refinement.popularity_weights(counts, 1.0)
  np.testing.assert_allclose(w, np.array([0, 4, 1, 1, 9]) / 3.75)
  np.testing.assert_allclose(
      code_refinement.popularity_weights(counts, 0.5)[1:], np.array([2, 1, 1, 3]) / 1.75
  )
  for bad in (-1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="power"):
      code_refinement.popularity_weights(counts, bad)


def _random_problem(seed, m=2, k=4, d=3, v=40):
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(v + 1, d)).astype(np.float32)
  table[0] = 0
  codes = np.zeros((v + 1, m), np.uint8)
  codes[1:] = rng.integers(0, k, (v, m))
  return rng, table, codes


def test_weighted_refit_is_the_fit_on_rows_repeated_by_their_weight():
  from ccrec.train.code_refinement import refit_codebooks

  rng, table, codes = _random_problem(3)
  repeats = rng.integers(1, 4, len(table))
  repeats[0] = 1
  weights = repeats.astype(np.float64)
  weights[0] = 0
  fitted, mse = refit_codebooks(table, codes, 4, item_weights=weights)
  # Integer weights are the same least-squares problem as repeating each row that often.
  expanded = np.repeat(np.arange(1, len(table)), repeats[1:])
  rep_table = np.concatenate([table[:1], table[expanded]])
  rep_codes = np.concatenate([codes[:1], codes[expanded]])
  want, want_mse = refit_codebooks(rep_table, rep_codes, 4)
  np.testing.assert_allclose(fitted, want, atol=1e-5)
  assert mse == pytest.approx(want_mse, rel=1e-6)
  # Unit weights are the unweighted fit, to the bit.
  ones = np.ones(len(table))
  for a, b in zip(
      refit_codebooks(table, codes, 4, item_weights=ones), refit_codebooks(table, codes, 4)
  ):
    np.testing.assert_array_equal(a, b)


def test_weighted_refinement_lowers_the_weighted_error_and_favours_heavy_items():
  from ccrec.train.code_refinement import refine_codes, refit_codebooks

  rng, table, codes = _random_problem(4, v=120)
  weights = np.ones(len(table))
  weights[1:21] = 50.0  # twenty heavy items
  weights[0] = 0
  _, start = refit_codebooks(table, codes, 4, item_weights=weights)
  got, books, history = refine_codes(table, codes, 4, iterations=20, item_weights=weights)
  assert all(b <= a + 1e-9 for a, b in zip([start] + history, history))
  plain, plain_books, _ = refine_codes(table, codes, 4, iterations=20)
  err = lambda c, bk: np.sum(
      (sum(bk[j][c[1:, j].astype(int)] for j in range(2)) - table[1:]) ** 2, axis=1
  )
  heavy_w, heavy_p = err(got, books)[:20].mean(), err(plain, plain_books)[:20].mean()
  assert heavy_w < heavy_p  # the heavy items are reconstructed better with the weights...
  assert err(got, books)[20:].mean() > err(plain, plain_books)[20:].mean()  # ...at the others' cost


def test_weighted_deduplication_lets_the_heaviest_item_keep_the_code():
  from ccrec.train.code_learning import code_report
  from ccrec.train.code_refinement import deduplicate_codes

  rng, table, codes = _random_problem(5, k=8, v=10)
  books = rng.normal(size=(2, 8, 3)).astype(np.float32)
  codes[1:5] = (1, 2)
  group = [i for i in range(1, len(codes)) if tuple(codes[i]) == (1, 2)]
  err = lambda i: float(np.sum((books[0][1] + books[1][2] - table[i]) ** 2))
  best, worst = min(group, key=err), max(group, key=err)
  unweighted, _ = deduplicate_codes(table, codes, books)
  assert tuple(unweighted[best]) == (1, 2) and tuple(unweighted[worst]) != (1, 2)
  weights = np.ones(len(table))
  weights[0] = 0
  weights[worst] = 7.0  # the worst reconstructed member is now the heaviest: it keeps the code
  out, left = deduplicate_codes(table, codes, books, weights)
  assert left == 0 and code_report(out, 8)["collisions"] == 0
  assert tuple(out[worst]) == (1, 2) and tuple(out[best]) != (1, 2)


@pytest.mark.slow
def test_weighted_code_learning_reconstructs_heavy_items_better():
  table = _planted(3)
  weights = np.ones(len(table))
  weights[0] = 0
  weights[1:17] = 100.0
  kwargs = dict(
      SETTINGS, max_steps=300, patience=100, seed=_key(4), num_codebooks=1, codebook_size=8
  )
  plain = code_learning.learn_codes(table, **kwargs)
  heavy = code_learning.learn_codes(table, item_weights=weights, **kwargs)
  assert heavy.report["weighted"] and not plain.report["weighted"]
  err = lambda r: np.sum((r.codebooks[0][r.codes[1:, 0].astype(int)] - table[1:]) ** 2, axis=1)
  assert err(heavy)[:16].mean() < err(plain)[:16].mean()
  # The reported error is the weighted mean of these codes with these codebooks.
  assert heavy.report["mse"] == pytest.approx(
      np.sum(weights[1:] * err(heavy)) / weights.sum(), rel=1e-4
  )


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.ones(5), r"\[V\+1\]"),
        (-np.ones(129), "finite and >= 0"),
        (np.full(129, np.nan), "finite and >= 0"),
    ],
)
def test_bad_item_weights_are_refused(bad, match):
  with pytest.raises(ValueError, match=match):
    code_learning.learn_codes(_planted(), max_steps=10, seed=_key(5), item_weights=bad, **SETTINGS)


def test_sampled_checks_keep_the_best_parameters_codes_over_the_whole_table():
  from ccrec.train.code_refinement import weighted_mse

  table = _planted()
  kwargs = dict(max_steps=300, patience=100, seed=_key(4), **SETTINGS)
  full = code_learning.learn_codes(table, **kwargs)
  # A sample of every item is the whole table: the same run.
  same = code_learning.learn_codes(table, check_items=len(table) - 1, **kwargs)
  np.testing.assert_array_equal(same.codes, full.codes)
  assert same.history == full.history
  part = code_learning.learn_codes(table, check_items=50, **kwargs)
  assert part.codes.shape == full.codes.shape and not part.codes[0].any()
  assert len(part.history) == len(full.history)
  # The report's mse is the returned codes' over every item, through the returned codebooks.
  assert part.report["mse"] == pytest.approx(
      weighted_mse(table, part.codes, part.codebooks), rel=1e-4
  )
  with pytest.raises(ValueError, match="check_items"):
    code_learning.learn_codes(table, check_items=-1, **kwargs)
