"""Learning-rate decay per epoch and the falling mixup weight."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccrec import config as config_lib
from ccrec.train.distill import eta_at
from ccrec.train.state import make_optimizer


def _train(lr_decay):
  c = config_lib.base_config()
  c.train.lr_decay = lr_decay
  return c.train


def test_lr_decay_multiplies_the_rate_by_decay_each_epoch():
  tx = make_optimizer(_train(0.5), steps_per_epoch=2)
  params = {"w": jnp.zeros(())}
  state = tx.init(params)
  sizes = []
  for _ in range(5):  # constant gradient: Adam's normalised step is exactly lr(t)
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    sizes.append(-float(updates["w"]))
  expected = [1e-3 * 0.5 ** (n / 2) for n in range(5)]
  np.testing.assert_allclose(sizes, expected, rtol=1e-4)


def test_no_decay_keeps_the_rate_constant():
  tx = make_optimizer(_train(1.0), steps_per_epoch=2)
  params = {"w": jnp.zeros(())}
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    np.testing.assert_allclose(-float(updates["w"]), 1e-3, rtol=1e-4)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_lr_decay_is_named(bad):
  c = config_lib.base_config()
  c.train.lr_decay = bad
  with pytest.raises(ValueError, match="train.lr_decay"):
    config_lib.validate(c)


def test_eta_falls_linearly_to_zero_and_stays_there():
  values = [float(eta_at(0.8, jnp.int32(s), 10)) for s in (0, 5, 10, 20)]
  np.testing.assert_allclose(values, [0.8, 0.4, 0.0, 0.0], atol=1e-7)
  assert eta_at(0.8, jnp.int32(7), 0) == 0.8  # no decay: the paper's constant eta
  jitted = jax.jit(lambda s: eta_at(0.5, s, 4))
  np.testing.assert_allclose(float(jitted(jnp.int32(2))), 0.25)
