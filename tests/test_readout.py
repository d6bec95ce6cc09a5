"""Readouts: the soft-attention formula by hand, causal form == per-prefix form."""

import jax
import jax.numpy as jnp
import numpy as np

from ccrec.models.initializers import make_initializer
from ccrec.models.readout import LastReadout, SoftAttentionReadout, masked_mean
from ccrec.serving import nn as np_nn

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
    a = (
        sig(np.tanh(valid) @ p["w1"]["kernel"] + p["w1"]["bias"] + m @ p["w2"]["kernel"])
        @ p["q"]["kernel"]
    )[:, 0]
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


# A 6-click session with hot items at positions 1 and 4 (and a second, shorter session): the
# views' masks have gaps. Each state is its own position index, so a readout says what it read.
_GAP_HOT = np.array([[0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]], bool)
_GAP_VALID = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], bool)


def _position_states(d=4):
  """h[b, t] = (t + 1) * (1, ..., 1) at valid positions, 0 at padding."""
  h = np.broadcast_to((np.arange(6, dtype=np.float32) + 1)[None, :, None], (2, 6, d))
  return jnp.asarray(h * _GAP_VALID[..., None])


def test_last_readout_reads_the_last_allowed_position_of_a_mask_with_gaps():
  h = _position_states()
  hot, cold = _GAP_VALID & _GAP_HOT, _GAP_VALID & ~_GAP_HOT
  read = lambda m: np.asarray(LastReadout().apply({}, h, jnp.asarray(m)))[:, 0] - 1
  np.testing.assert_array_equal(read(hot), [4, 0])  # not mask.sum() - 1 = [1, 0]
  np.testing.assert_array_equal(read(cold), [5, 2])  # not [3, 1]
  np.testing.assert_array_equal(read(_GAP_VALID), [5, 2])
  empty = LastReadout().apply({}, h, jnp.zeros((2, 6), bool))
  np.testing.assert_array_equal(empty, 0)  # nothing allowed: zeros, as soft attention gives


def test_last_readout_causal_reads_the_last_allowed_position_up_to_each_row():
  h = _position_states()
  hot = jnp.asarray(_GAP_VALID & _GAP_HOT)
  got = np.asarray(LastReadout().apply({}, h, hot, method="causal"))[..., 0]
  # Row t: the state at the last hot position <= t (0 = none yet).
  np.testing.assert_array_equal(got, [[0, 2, 2, 2, 5, 5], [1, 1, 1, 1, 1, 1]])
  for t in range(6):  # causal row t == the readout of the mask cut at t
    cut = hot & (jnp.arange(6) <= t)[None]
    np.testing.assert_array_equal(got[:, t], np.asarray(LastReadout().apply({}, h, cut))[:, 0])


def test_soft_attention_reads_only_the_allowed_positions_of_a_mask_with_gaps():
  # Changing the states at positions the mask leaves out changes nothing; changing an allowed
  # one does.
  h = jax.random.normal(jax.random.key(3), (2, 6, 4)) * _GAP_VALID[..., None]
  hot = jnp.asarray(_GAP_VALID & _GAP_HOT)
  ro = SoftAttentionReadout(4, INIT)
  params = ro.init(jax.random.key(1), h, hot)
  for form in ("__call__", "causal"):
    apply = lambda x, form=form: np.asarray(ro.apply(params, x, hot, method=form))
    base = apply(h)
    np.testing.assert_array_equal(apply(h + 5.0 * ~hot[..., None]), base)
    assert np.abs(apply(h.at[0, 4].add(1.0)) - base).max() > 1e-3


def test_numpy_last_readout_matches_flax_on_masks_with_gaps():
  h = np.asarray(_position_states())
  read = lambda m: np_nn.readout({}, {"readout": "last"}, h, m)[:, 0] - 1
  np.testing.assert_array_equal(read(_GAP_VALID & _GAP_HOT), [4, 0])
  np.testing.assert_array_equal(read(_GAP_VALID & ~_GAP_HOT), [5, 2])
  h = np.asarray(jax.random.normal(jax.random.key(4), (2, 6, 4)))
  for m in (_GAP_VALID & _GAP_HOT, _GAP_VALID & ~_GAP_HOT, _GAP_VALID, np.zeros((2, 6), bool)):
    np.testing.assert_array_equal(
        np_nn.readout({}, {"readout": "last"}, h, m),
        np.asarray(LastReadout().apply({}, jnp.asarray(h), jnp.asarray(m))),
    )
