"""Readouts: the soft-attention formula by hand, causal form == per-prefix form."""

import jax
import jax.numpy as jnp
import numpy as np

from ccrec.models.encoder import make_initializer
from ccrec.models.readout import LastReadout, SoftAttentionReadout, masked_mean

INIT = make_initializer("normal", 0.5)


def _data():
  h = jax.random.normal(jax.random.key(0), (2, 5, 4))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  return h * mask[..., None], mask


def test_soft_attention_matches_hand_computation():
  h, mask = _data()
  ro = SoftAttentionReadout(4, INIT)
  params = ro.init(jax.random.key(1), h, mask)
  s = np.asarray(ro.apply(params, h, mask))
  p = jax.tree.map(np.asarray, params["params"])
  sig = lambda x: 1 / (1 + np.exp(-x))
  for b in range(2):
    valid = np.asarray(h[b])[np.asarray(mask[b])]
    m = valid.mean(0)
    a = (sig(np.tanh(valid) @ p["w1"]["kernel"] + p["w1"]["bias"] + m @ p["w2"]["kernel"])
         @ p["q"]["kernel"])[:, 0]
    np.testing.assert_allclose(s[b], (a[:, None] * valid).sum(0), rtol=1e-5, atol=1e-6)


def test_weights_are_not_softmax_normalised():
  # Doubling every state doubles s only if a_t is unnormalised AND unchanged; instead check
  # that a session of one repeated state h gives s = a * n * h with a independent of n.
  ro = SoftAttentionReadout(4, INIT)
  v = jax.random.normal(jax.random.key(2), (4,))
  h = jnp.broadcast_to(v, (1, 4, 4))
  params = ro.init(jax.random.key(1), h, jnp.ones((1, 4), bool))
  s2 = ro.apply(params, h, jnp.array([[1, 1, 0, 0]], bool))
  s4 = ro.apply(params, h, jnp.ones((1, 4), bool))
  np.testing.assert_allclose(s4, 2 * s2, rtol=1e-5)


def test_causal_equals_prefix_readouts():
  h, mask = _data()
  ro = SoftAttentionReadout(4, INIT)
  params = ro.init(jax.random.key(1), h, mask)
  all_pos = ro.apply(params, h, mask, method=ro.causal)
  for t in range(5):
    prefix_mask = mask & (jnp.arange(5) <= t)[None]
    want = ro.apply(params, h * prefix_mask[..., None], prefix_mask)
    for b in range(2):
      if mask[b, t]:
        np.testing.assert_allclose(all_pos[b, t], want[b], rtol=1e-5, atol=1e-6)


def test_last_readout_and_masked_mean():
  h, mask = _data()
  last = LastReadout().apply({}, h, mask)
  np.testing.assert_array_equal(last[0], h[0, 2])
  np.testing.assert_array_equal(last[1], h[1, 4])
  np.testing.assert_allclose(masked_mean(h, mask)[0], h[0, :3].mean(0), rtol=1e-6)
  assert np.all(masked_mean(h, jnp.zeros_like(mask)) == 0)
