"""NARM (model.encoder='narm'): its readout by hand, gaps in the mask, prefixes, views."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec import config as config_lib
from ccrec.models.initializers import make_initializer
from ccrec.models.readout import NARMReadout
from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
from ccrec.models.views import DistillHeads, init_heads

D, L = 6, 7
SPEC = ModelSpec(
    num_items=40,
    d=8,
    encoder="narm",
    readout="narm",
    gru_hidden=12,
    max_len=L,
    dropout=0.25,
    readout_dropout=0.5,
)


@pytest.fixture(scope="module")
def readout():
  module = NARMReadout(D, make_initializer("normal", 0.5), dropout=0.5)
  h = jax.random.normal(jax.random.PRNGKey(1), (3, L, D))
  variables = module.init(jax.random.PRNGKey(0), h, jnp.ones((3, L), bool))
  return module, variables, h


def _by_hand(p, h, mask):
  """NARM's readout in numpy for one session: h [L, d], mask [L] (gaps allowed)."""
  k = lambda name: np.asarray(p[name]["kernel"], np.float64)
  h = np.asarray(h, np.float64)
  allowed = np.flatnonzero(mask)
  if not len(allowed):
    return np.zeros(h.shape[1])
  q = h[allowed[-1]]
  local = np.zeros(h.shape[1])
  for j in allowed:
    local += (1 / (1 + np.exp(-(q @ k("a1") + h[j] @ k("a2"))))) @ k("v")[:, 0] * h[j]
  return np.concatenate([local, q]) @ k("b")


def test_readout_equals_narm_by_hand_with_gaps_and_an_empty_row(readout):
  module, variables, h = readout
  mask = np.array(
      [
          [1, 0, 1, 1, 0, 0, 0],  # gaps: reads positions 0, 2, 3; query at 3
          [0, 1, 0, 0, 1, 0, 1],  # query at 6
          [0, 0, 0, 0, 0, 0, 0],  # nothing allowed: zeros
      ],
      bool,
  )
  got = module.apply(variables, h, jnp.asarray(mask))
  for row in range(3):
    want = _by_hand(variables["params"], h[row], mask[row])
    np.testing.assert_allclose(got[row], want, rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(got[2]))


def test_states_the_mask_leaves_out_change_nothing(readout):
  module, variables, h = readout
  mask = jnp.asarray(np.array([[1, 0, 1, 1, 0, 0, 0]] * 3, bool))
  base = module.apply(variables, h, mask)
  moved = module.apply(variables, h.at[:, 1].add(5.0).at[:, 5].add(5.0), mask)
  np.testing.assert_allclose(base, moved, rtol=1e-6)
  changed = module.apply(variables, h.at[:, 2].add(5.0), mask)  # an allowed key
  assert np.all(np.abs(np.asarray(changed - base)).max(-1) > 1e-3)


def test_causal_row_t_is_the_readout_of_the_prefix_ending_at_t(readout):
  module, variables, h = readout
  mask = np.array([[1, 1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 0, 0, 0], [0, 1, 1, 0, 1, 1, 1]], bool)
  causal = module.apply(variables, h, jnp.asarray(mask), method="causal")
  for t in range(L):
    prefix = mask & (np.arange(L) <= t)[None]
    want = module.apply(variables, h, jnp.asarray(prefix))
    np.testing.assert_allclose(causal[:, t], want, rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training(readout):
  module, variables, h = readout
  mask = jnp.ones((3, L), bool)
  a = module.apply(variables, h, mask)
  assert np.array_equal(a, module.apply(variables, h, mask, deterministic=True))
  rngs = {"dropout": jax.random.PRNGKey(3)}
  b = module.apply(variables, h, mask, deterministic=False, rngs=rngs)
  assert not np.allclose(a, b)


@pytest.fixture(scope="module")
def model():
  m = SessionRecommender(SPEC)
  v = init_variables(m, jax.random.PRNGKey(0))
  return m, jax.tree.map(lambda a: a * 20.0, v)


def test_narm_model_reads_its_own_readout_of_the_gru_states(model):
  m, v = model
  items = jnp.array([[5, 9, 2, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]])
  out = m.apply(v, items, all_positions=True)
  for row in range(2):
    want = _by_hand(v["params"]["readout"], out["hidden"][row], np.asarray(items[row] > 0))
    np.testing.assert_allclose(out["session"][row], want, rtol=1e-4, atol=1e-5)
  assert not np.any(np.asarray(out["hidden"][0, 3:]))  # padding: zero states, never read
  for t in range(L):  # row t of the causal form: the session cut after click t

    prefix = jnp.where(jnp.arange(L)[None] <= t, items[1:], 0)
    np.testing.assert_allclose(
        out["positions"][1, t], m.apply(v, prefix)["session"][0], rtol=1e-4, atol=1e-5
    )


def test_hot_and_cold_views_read_only_their_positions(model):
  m, v = model
  heads = DistillHeads(SPEC.d, readout="narm", init_scale=0.5)
  hv = init_heads(heads, jax.random.PRNGKey(2), L)
  items = jnp.array([[3, 7, 8, 11, 4, 2, 0]])
  out = m.apply(v, items)
  is_hot = jnp.array([[False, True, False, False, True, False, False]])
  hot, cold = heads.apply(
      hv, "teacher", out["hidden"], out["mask"], out["session"], is_hot, method="views"
  )
  hidden = out["hidden"]
  # A cold position's state moves only the cold view; a hot one's only the hot view.
  for pos, moves in ((2, "cold"), (4, "hot")):
    h2 = hidden.at[0, pos].add(3.0)
    hot2, cold2 = heads.apply(
        hv, "teacher", h2, out["mask"], out["session"], is_hot, method="views"
    )
    assert np.allclose(hot2, hot) == (moves != "hot")
    assert np.allclose(cold2, cold) == (moves != "cold")
  params = hv["params"]["teacher_hot_readout"]
  want = _by_hand(params, hidden[0], np.asarray(out["mask"][0] & is_hot[0]))
  np.testing.assert_allclose(hot[0], want, rtol=1e-4, atol=1e-5)


def test_config_requires_the_narm_readout_and_a_valid_dropout():
  c = config_lib.base_config()
  c.model.encoder = "narm"
  c.model.readout = "last"
  with pytest.raises(config_lib.ConfigError, match="model.readout.*'narm' with model.encoder"):
    config_lib.validate(c)
  c.model.readout = "narm"
  config_lib.validate(c)
  for bad in (-0.1, 1.0):
    c.model.readout_dropout = bad
    with pytest.raises(config_lib.ConfigError, match="model.readout_dropout"):
      config_lib.validate(c)


def test_narm_readout_under_the_transformer():
  spec = dataclasses.replace(SPEC, encoder="transformer", num_blocks=1, d=8, num_heads=2)
  m = SessionRecommender(spec)
  v = init_variables(m, jax.random.PRNGKey(0))
  assert set(v["params"]["readout"]) == {"a1", "a2", "v", "b"}
