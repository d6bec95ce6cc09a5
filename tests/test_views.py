"""Hot/cold views: which clicks each view reads, for the readout of every shipped config."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec.models.views import DistillHeads, init_heads
from ccrec.workflow import experiments

D, L = 4, 6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Session 0: 6 clicks, hot items at positions 1 and 4; session 1: 3 clicks, the first hot;
# session 2: 4 clicks, none hot; session 3: 2 clicks, both hot.
VALID = np.array(
    [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], bool
)
HOT = np.array(
    [[0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]], bool
)


def _shipped_readouts():
  readouts = {
      experiments.load_config_file(p).model.readout
      for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
  }
  return sorted(readouts | {"soft_attention", "last"})


def _views(readout, hidden, session):
  heads = DistillHeads(D, readout, "normal", 0.5)
  variables = init_heads(heads, jax.random.key(0), L)
  return [
      np.asarray(v)
      for v in heads.apply(
          variables,
          "teacher",
          jnp.asarray(hidden),
          jnp.asarray(VALID),
          jnp.asarray(session),
          jnp.asarray(HOT),
          method="views",
      )
  ]


def _hidden(seed=0):
  h = np.asarray(jax.random.normal(jax.random.key(seed), (4, L, D)))
  return h * VALID[..., None]


def test_every_shipped_config_uses_a_known_readout():
  assert set(_shipped_readouts()) == {"soft_attention", "last", "narm"}


def test_last_readout_views_read_the_last_hot_and_the_last_cold_click():
  h, session = _hidden(), np.full((4, D), 7.0, np.float32)
  hot, cold = _views("last", h, session)
  np.testing.assert_array_equal(hot[0], h[0, 4])  # hot clicks at 1 and 4
  np.testing.assert_array_equal(cold[0], h[0, 5])  # cold clicks at 0, 2, 3 and 5
  np.testing.assert_array_equal(hot[1], h[1, 0])
  np.testing.assert_array_equal(cold[1], h[1, 2])
  np.testing.assert_array_equal(cold[2], h[2, 3])
  np.testing.assert_array_equal(hot[3], h[3, 1])


@pytest.mark.parametrize("readout", _shipped_readouts())
def test_each_view_reads_only_its_own_clicks(readout):
  h, session = _hidden(), np.asarray(jax.random.normal(jax.random.key(9), (4, D)))
  hot, cold = _views(readout, h, session)
  # Moving the states of cold clicks leaves the hot view unchanged, and vice versa.
  cold_moved = _views(readout, h + 3.0 * (VALID & ~HOT)[..., None], session)
  hot_moved = _views(readout, h + 3.0 * (VALID & HOT)[..., None], session)
  np.testing.assert_array_equal(cold_moved[0], hot)
  np.testing.assert_array_equal(hot_moved[1], cold)
  for b in (0, 1):  # sessions with hot and cold clicks: each view moves with its own clicks
    assert np.abs(cold_moved[1][b] - cold[b]).max() > 1e-3
    assert np.abs(hot_moved[0][b] - hot[b]).max() > 1e-3


@pytest.mark.parametrize("readout", _shipped_readouts())
def test_a_session_without_hot_or_cold_clicks_uses_its_full_session_vector(readout):
  h, session = _hidden(), np.asarray(jax.random.normal(jax.random.key(9), (4, D)))
  hot, cold = _views(readout, h, session)
  np.testing.assert_array_equal(hot[2], session[2])  # no hot click
  np.testing.assert_array_equal(cold[3], session[3])  # no cold click
  assert np.abs(hot[0] - session[0]).max() > 1e-3 and np.abs(cold[0] - session[0]).max() > 1e-3
