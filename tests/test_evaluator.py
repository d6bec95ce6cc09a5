"""Evaluator: exact full ranking, chunked == whole, every example once, hot/cold split."""

import jax
import numpy as np
import pytest

from ccrec.data import Examples, Sequences
from ccrec.evaluation.evaluator import Evaluator
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables

V = 23


@pytest.fixture(scope="module")
def setup():
  model = SessionRecommender(
      ModelSpec(num_items=V, d=8, num_blocks=1, num_heads=2, inner=16, max_len=5)
  )
  variables = init_variables(model, jax.random.key(0))
  rng = np.random.default_rng(0)
  prefixes = [list(rng.integers(1, V + 1, rng.integers(1, 8))) for _ in range(11)]
  examples = Examples(Sequences.from_lists(prefixes), rng.integers(1, V + 1, 11).astype(np.int32))
  hot = np.zeros(V + 1, bool)
  hot[1:6] = True
  encode = lambda v, items: model.apply(v, items)["session"]
  score = lambda v, s, ids: model.apply(v, s, ids, method="score")
  return model, variables, examples, hot, encode, score


def _brute_force(model, variables, examples, max_len=5):
  ranks = []
  for i in range(len(examples.targets)):
    items = np.zeros((1, max_len), np.int32)
    p = examples.prefixes[i][-max_len:]
    items[0, : len(p)] = p
    s = model.apply(variables, items)["session"]
    scores = np.asarray(model.apply(variables, s, method="score"))[0]
    t = examples.targets[i]
    ranks.append(int((np.delete(scores[1:], t - 1) >= scores[t]).sum()))
  return np.array(ranks)


def test_metrics_equal_brute_force_and_chunked(setup):
  model, variables, examples, hot, encode, score = setup
  ranks = _brute_force(model, variables, examples)
  whole = Evaluator("m", encode, score, num_items=V, hot=hot, batch_size=4, max_len=5).evaluate(
      variables, "test", examples
  )
  chunked = Evaluator(
      "m", encode, score, num_items=V, hot=hot, batch_size=4, max_len=5, item_chunk=7
  ).evaluate(variables, "test", examples)
  assert whole["m/test/count"] == 11  # 3 batches of 4: the filler row is not counted
  np.testing.assert_allclose(whole["m/test/HR@10"], np.mean(ranks < 10))
  np.testing.assert_allclose(
      whole["m/test/NDCG@5"], np.mean(np.where(ranks < 5, 1 / np.log2(ranks + 2), 0))
  )
  np.testing.assert_allclose(
      whole["m/test/MRR@20"], np.mean(np.where(ranks < 20, 1 / (ranks + 1), 0))
  )
  for key, value in whole.items():
    assert chunked[key] == pytest.approx(value, abs=1e-9), key


def test_hot_and_cold_partition_the_examples(setup):
  model, variables, examples, hot, encode, score = setup
  out = Evaluator("m", encode, score, num_items=V, hot=hot, batch_size=8, max_len=5).evaluate(
      variables, "valid", examples
  )
  n_hot = int(hot[examples.targets].sum())
  assert out["m/valid_hot/count"] == n_hot and out["m/valid_cold/count"] == 11 - n_hot
  mixed = (out["m/valid_hot/HR@10"] * n_hot + out["m/valid_cold/HR@10"] * (11 - n_hot)) / 11
  assert mixed == pytest.approx(out["m/valid/HR@10"])


def test_empty_split_is_an_error(setup):
  model, variables, examples, hot, encode, score = setup
  empty = Examples(Sequences.from_lists([]), np.zeros(0, np.int32))
  with pytest.raises(ValueError, match="empty 'test'"):
    Evaluator("m", encode, score, num_items=V, hot=hot, batch_size=4, max_len=5).evaluate(
        variables, "test", empty
    )
