"""The session encoders and readouts in numpy (the runtime's forward pass).

Mirrors ccrec/models/encoder.py, gru.py and readout.py. `encode` dispatches on the
config's `encoder` (absent: the transformer, ccrec/serving/manifest.py):

  transformer       positions added, LayerNorm, post-LN causal blocks (multi-head
                    self-attention with a causal + key-padding mask filled with -1e9,
                    residual + LN; exact-GELU feed-forward, residual + LN);
  gru4rec, narm     `gru_layers` layers of Flax's GRUCell run over the positions in order
                    (`gru`), then the dense projection to d.

`readout` dispatches on the config's `readout`: the soft-attention readout
(a_t = q^T sigmoid(W1 tanh(h_t) + b + W2 m), not normalised), the last valid position, or
NARM's attention over the states (`narm_readout`). Computation is float32 like the Flax
model; erf is computed in float64.

`params` is the bundle's flat dict: 'encoder/block_0/query/kernel' -> array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ccrec.serving.manifest import DEFAULT_ENCODER, ENCODERS, GRU_ENCODERS, READOUTS

_MASK_VALUE = np.float32(-1e9)  # as ccrec/models/encoder.py

# erf on a grid of step 1/64 over [0, 6] (math.erf, double precision) and a
# 4th-order Taylor expansion around the nearest grid point x0 (|t| <= 1/128):
# erf(x0 + t) = f0 + d0 (t - x0 t^2 + (2 x0^2 - 1)/3 t^3 + x0 (3 - 2 x0^2)/6 t^4),
# d0 = 2/sqrt(pi) exp(-x0^2). The remainder is below max|erf^(5)| t^5 / 120
# <= 13.6 (1/128)^5 / 120 < 4e-12; erf(6) is 1 in double precision.
_ERF_STEPS = 64
_ERF_MAX = 6.0
_x0 = np.arange(int(_ERF_MAX * _ERF_STEPS) + 1, dtype=np.float64) / _ERF_STEPS
_d0 = 2.0 / math.sqrt(math.pi) * np.exp(-(_x0**2))
_ERF_F0 = np.array([math.erf(x) for x in _x0])
_ERF_C = (_d0, -_x0 * _d0, (2.0 * _x0**2 - 1.0) / 3.0 * _d0, _x0 * (3.0 - 2.0 * _x0**2) / 6.0 * _d0)


_ERF_TABLES = {
    np.dtype(np.float64): (_ERF_F0,) + _ERF_C,
    np.dtype(np.float32): tuple(c.astype(np.float32) for c in (_ERF_F0,) + _ERF_C),
}


def erf(x: np.ndarray, dtype=np.float64) -> np.ndarray:
  """Vectorised erf (numpy has no erf; scipy is no dependency).

  dtype float64: absolute error < 1e-11. float32 (what gelu uses): < 1e-7
  (the float32 rounding of erf(x0) dominates; the correction term is < 0.009).
  """
  dtype = np.dtype(dtype)
  x = np.asarray(x, dtype=dtype)
  if x.ndim == 0:
    return erf(x.reshape(1), dtype).reshape(())
  f0, c1, c2, c3, c4 = _ERF_TABLES[dtype]
  a = np.abs(x)
  np.minimum(a, dtype.type(_ERF_MAX), out=a)
  with np.errstate(invalid="ignore"):  # NaN -> some index, clipped below; t stays NaN
    i = np.rint(a * dtype.type(_ERF_STEPS)).astype(np.intp)
  t = i.astype(dtype)
  t *= dtype.type(-1.0 / _ERF_STEPS)  # exact: a power of two
  t += a
  out = np.take(c4, i, mode="clip")
  for c in (c3, c2, c1):  # Horner, in place
    out *= t
    out += np.take(c, i, mode="clip")
  out *= t
  out += np.take(f0, i, mode="clip")
  return np.copysign(out, x, out=out)


def gelu(x: np.ndarray) -> np.ndarray:
  """Exact GELU x/2 (1 + erf(x / sqrt(2))) in float32, as jax.nn.gelu(approximate=False).

  Computed in chunks of 16K elements so the temporaries stay in cache.
  """
  x = np.asarray(x, dtype=np.float32)
  flat = x.reshape(-1)
  out = np.empty_like(flat)
  chunk = 1 << 14
  for lo in range(0, len(flat), chunk):
    part = flat[lo : lo + chunk]
    e = erf(part * np.float32(1.0 / math.sqrt(2.0)), np.float32)
    e += np.float32(1.0)
    e *= part
    e *= np.float32(0.5)
    out[lo : lo + chunk] = e
  return out.reshape(x.shape)


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
  """LayerNorm over the last axis (float32)."""
  mean = x.mean(-1, keepdims=True)
  centred = x - mean
  var = np.square(centred).mean(-1, keepdims=True)
  return centred * (1.0 / np.sqrt(var + np.float32(eps))) * scale + bias


def _dense(p: Mapping[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
  y = x @ p[name + "/kernel"]
  bias = p.get(name + "/bias")
  return y if bias is None else y + bias


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
  x = x - x.max(axis=axis, keepdims=True)
  np.exp(x, out=x)
  x /= x.sum(axis=axis, keepdims=True)
  return x


def encode(
    params: Mapping[str, np.ndarray], config: Mapping, x: np.ndarray, mask: np.ndarray
) -> np.ndarray:
  """x: float32 [B, L, d] item embeddings (left-aligned), mask: bool [B, L] -> h [B, L, d].

  L may be shorter than max_len (the runtime passes the batch's longest
  session): both encoders are causal, so the valid positions do not depend on
  the padding after them.
  """
  length = x.shape[1]
  if length > config["max_len"]:
    raise ValueError(f"sequence length {length} exceeds max_len={config['max_len']}")
  encoder = config.get("encoder", DEFAULT_ENCODER)
  if encoder not in ENCODERS:
    raise ValueError(f"unknown encoder {encoder!r}: the runtime serves {ENCODERS}")
  if encoder in GRU_ENCODERS:
    return gru_encode(params, config, x, mask)
  return transformer_encode(params, config, x, mask)


def transformer_encode(
    params: Mapping[str, np.ndarray], config: Mapping, x: np.ndarray, mask: np.ndarray
) -> np.ndarray:
  """The transformer encoder (ccrec/models/encoder.py): x [B, L, d], mask [B, L] -> h."""
  b, length, d = x.shape
  heads = config["num_heads"]
  head = d // heads
  eps = config["layer_norm_eps"]
  p = params
  x = x + p["encoder/position/embedding"][:length][None]
  x = layer_norm(x, p["encoder/ln_in/scale"], p["encoder/ln_in/bias"], eps)
  allowed = np.tril(np.ones((length, length), dtype=bool))[None, None] & mask[:, None, None, :]
  inv_sqrt = np.float32(1.0 / math.sqrt(head))

  def split(t):  # [B, L, d] -> [B, H, L, c]
    return t.reshape(b, length, heads, head).transpose(0, 2, 1, 3)

  for i in range(config["num_blocks"]):
    pre = f"encoder/block_{i}/"
    q = split(_dense(p, pre + "query", x))
    k = split(_dense(p, pre + "key", x))
    v = split(_dense(p, pre + "value", x))
    logits = (q @ k.transpose(0, 1, 3, 2)) * inv_sqrt  # [B, H, L, L]
    logits = np.where(allowed, logits, _MASK_VALUE)
    attn = (softmax(logits) @ v).transpose(0, 2, 1, 3).reshape(b, length, d)
    x = layer_norm(
        x + _dense(p, pre + "out", attn), p[pre + "ln_attn/scale"], p[pre + "ln_attn/bias"], eps
    )
    ff = _dense(p, pre + "ff_out", gelu(_dense(p, pre + "ff_in", x)))
    x = layer_norm(x + ff, p[pre + "ln_ff/scale"], p[pre + "ln_ff/bias"], eps)
  return x * mask[..., None].astype(x.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
  with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the right limit 0
    return 1.0 / (1.0 + np.exp(-x))


def gru(params: Mapping[str, np.ndarray], prefix: str, x: np.ndarray) -> np.ndarray:
  """One layer of Flax's nn.GRUCell run over the positions in order from a zero state.

  x: float32 [B, L, n] -> the states [B, L, H]. The cell (weights under `prefix`:
  ir, iz, in with bias; hr, hz without; hn with bias), as flax.linen.GRUCell:
    r = sigmoid(x W_ir + b_ir + h W_hr)
    z = sigmoid(x W_iz + b_iz + h W_hz)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))
    h' = (1 - z) * n + z * h
  The input terms of every position are computed first, in one product each.
  """
  p = {name: params[f"{prefix}/{name}/kernel"] for name in ("ir", "iz", "in", "hr", "hz", "hn")}
  xr = x @ p["ir"] + params[f"{prefix}/ir/bias"]  # [B, L, H]
  xz = x @ p["iz"] + params[f"{prefix}/iz/bias"]
  xn = x @ p["in"] + params[f"{prefix}/in/bias"]
  b_hn = params[f"{prefix}/hn/bias"]
  batch, length, _ = x.shape
  h = np.zeros((batch, p["hr"].shape[0]), np.float32)
  out = np.empty((batch, length, h.shape[1]), np.float32)
  for t in range(length):
    r = _sigmoid(xr[:, t] + h @ p["hr"])
    z = _sigmoid(xz[:, t] + h @ p["hz"])
    n = np.tanh(xn[:, t] + r * (h @ p["hn"] + b_hn))
    h = (1.0 - z) * n + z * h
    out[:, t] = h
  return out


def gru_encode(
    params: Mapping[str, np.ndarray], config: Mapping, x: np.ndarray, mask: np.ndarray
) -> np.ndarray:
  """The GRU encoder (ccrec/models/gru.py): x [B, L, d], mask [B, L] -> h [B, L, d].

  config['gru_layers'] GRU layers (`gru`, weights encoder/gru_i/...), then the dense
  projection encoder/project to d; zero at padding. (The embedding dropout is the
  identity at inference.)
  """
  h = np.asarray(x, np.float32)
  for i in range(config["gru_layers"]):
    h = gru(params, f"encoder/gru_{i}", h)
  h = _dense(params, "encoder/project", h)
  return h * mask[..., None].astype(h.dtype)


def last_state(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """h [B, L, d] at the highest allowed position of mask [B, L] (zeros if none) -> [B, d]."""
  allowed = mask.astype(bool)
  last = h.shape[1] - 1 - np.argmax(allowed[:, ::-1], axis=1)
  return np.where(allowed.any(1)[:, None], h[np.arange(h.shape[0]), last], 0).astype(h.dtype)


def narm_readout(params: Mapping[str, np.ndarray], h: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """NARM's readout: h [B, L, d], mask [B, L] -> s [B, d].

  q = the state at the last valid position (`last_state`); alpha_j = sigmoid(q A1 + h_j A2)
  v for valid j, 0 elsewhere (not normalised); c = sum_j alpha_j h_j; s = [c, q] B. The
  weights (no biases): readout/a1/kernel, readout/a2/kernel [d, d], readout/v/kernel
  [d, 1], readout/b/kernel [2d, d].
  """
  q = last_state(h, mask)  # [B, d]
  e = _sigmoid((q @ params["readout/a1/kernel"])[:, None, :] + h @ params["readout/a2/kernel"])
  alpha = (e @ params["readout/v/kernel"])[..., 0] * mask.astype(h.dtype)  # [B, L]
  c = np.einsum("bl,bld->bd", alpha, h)
  return (np.concatenate([c, q], axis=-1) @ params["readout/b/kernel"]).astype(h.dtype)


def readout(
    params: Mapping[str, np.ndarray], config: Mapping, h: np.ndarray, mask: np.ndarray
) -> np.ndarray:
  """h: [B, L, d], mask: [B, L] -> session vectors s [B, d], by config['readout']."""
  kind = config["readout"]
  if kind == "last":
    return last_state(h, mask)
  if kind == "narm":
    return narm_readout(params, h, mask)
  if kind != "soft_attention":
    raise ValueError(f"unknown readout {kind!r}: the runtime serves {READOUTS}")
  return soft_attention_readout(params, h, mask)


def soft_attention_readout(
    params: Mapping[str, np.ndarray], h: np.ndarray, mask: np.ndarray
) -> np.ndarray:
  """The soft-attention readout (ccrec/models/readout.py): h [B, L, d], mask -> s [B, d]."""
  m = mask.astype(h.dtype)
  mean = (h * m[..., None]).sum(1) / np.maximum(m.sum(1), 1.0)[:, None]  # [B, d]
  z = _sigmoid(
      _dense(params, "readout/w1", np.tanh(h)) + (mean @ params["readout/w2/kernel"])[:, None, :]
  )  # [B, L, d]
  a = (z @ params["readout/q/kernel"])[..., 0] * m  # [B, L]
  return np.einsum("bl,bld->bd", a, h).astype(h.dtype)
