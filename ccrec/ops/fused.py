"""Full-softmax losses fused with the scoring matmul, computed in row chunks.

`s @ table.T` followed by a softmax loss materialises [N, V] logits, and autodiff
then builds several more [N, V] arrays for the backward pass (for R-Drop's two
passes and their KL, about ten). On a CPU that memory traffic, not the matmul,
is most of a teacher step. The functions here take the session vectors and the
table instead of the logits, and compute the loss *and its gradient* chunk by
chunk in the forward pass (the approach of fused linear cross-entropy kernels):
each chunk's logits [chunk, V] are scored, turned into the loss value and into
d loss / d logits by the closed forms below, and immediately contracted back to
[chunk, d] and [V, d] gradients. Nothing of size N x V outlives a chunk. The
gradients are stored as residuals of a `jax.custom_vjp`, so the backward pass is
a scalar multiplication.

Closed forms, per row with weight w, p = softmax(a), y = (1 - eps) onehot(t) +
eps uniform over the real items (columns 1..V-1; column 0, the padding id, is
masked):
  CE(a)        = -sum_v y_v log p_v                 d/da = p - y
  KL(p || q)   = sum_v p_v (log p_v - log q_v)      d/da = p * (log p - log q - KL(p||q))
                                                    d/db = q - p
Values and gradients equal `losses.softmax_cross_entropy_sums` and
`losses.kl_soft_targets_sums` on the materialised logits (tests/test_fused.py).

Rows are assigned to chunks with a stride (row r goes to chunk r mod n_chunks),
so a batch split along its rows over a mesh's data axis stays split inside every
chunk.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _chunked(x: jax.Array, chunk: int) -> jax.Array:
  """[N, ...] (N a multiple of chunk) -> [N / chunk, chunk, ...], row r in slice r mod n."""
  n = x.shape[0] // chunk
  return jnp.swapaxes(x.reshape(chunk, n, *x.shape[1:]), 0, 1)


def _unchunked(x: jax.Array) -> jax.Array:
  return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def _pad_rows(x: jax.Array, rows: int) -> jax.Array:
  return jnp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def _log_probs(logits: jax.Array, real: jax.Array) -> tuple[jax.Array, jax.Array]:
  """log softmax over the real columns (0 in the padding column) and its exp."""
  logits = jnp.where(real, logits, -jnp.inf)
  lp = jnp.where(real, jax.nn.log_softmax(logits, axis=-1), 0.0)
  return lp, jnp.where(real, jnp.exp(lp), 0.0)


def _chunk_terms(a, b, targets, w, eps, alpha):
  """One chunk: (differentiable total, per-term sums, d total / d logits per pass).

  b None: the cross-entropy alone.
  """
  vocab = a.shape[-1]
  real = jnp.arange(vocab) > 0
  y = (1.0 - eps) * jax.nn.one_hot(targets, vocab, dtype=a.dtype)
  if eps:
    y = y + jnp.where(real, eps / (vocab - 1), 0.0)
  la, pa = _log_probs(a, real)
  ce_a = -jnp.sum(y * la, axis=-1)
  wc = w[:, None]
  if b is None:
    ce = jnp.sum(w * ce_a)
    return ce, {"ce": ce}, (wc * (pa - y),)
  lb, pb = _log_probs(b, real)
  ce_b = -jnp.sum(y * lb, axis=-1)
  d = la - lb
  kl_ab = jnp.sum(pa * d, axis=-1)
  kl_ba = -jnp.sum(pb * d, axis=-1)
  terms = {"ce": 0.5 * jnp.sum(w * (ce_a + ce_b)), "kl": 0.5 * jnp.sum(w * (kl_ab + kl_ba))}
  half = 0.5 * wc
  grads = (
      half * (pa - y + alpha * (pa * (d - kl_ab[:, None]) + pa - pb)),
      half * (pb - y + alpha * (pb * (-d - kl_ba[:, None]) + pb - pa)),
  )
  return terms["ce"] + alpha * terms["kl"], terms, grads


def _forward(ss: tuple, table, targets, weights, eps, alpha, chunk):
  n = ss[0].shape[0]
  rows = -(-n // chunk) * chunk
  w = jnp.where(weights > 0, weights, 0.0).astype(table.dtype)
  xs = tuple(_chunked(_pad_rows(x, rows), chunk) for x in (*ss, targets, w))

  def body(d_table, x):
    *sc, tc, wc = x
    logits = [s @ table.T for s in sc]
    total, terms, grads = _chunk_terms(
        logits[0], logits[1] if len(sc) > 1 else None, tc, wc, eps, alpha
    )
    for g, s in zip(grads, sc):
      d_table = d_table + g.T @ s
    return d_table, (total, terms, tuple(g @ table for g in grads))

  d_table, (total, terms, d_s) = jax.lax.scan(body, jnp.zeros_like(table), xs)
  out = (jnp.sum(total), {k: jnp.sum(v) for k, v in terms.items()})
  return out, (tuple(_unchunked(g)[:n] for g in d_s), d_table)


def _backward(eps, alpha, chunk, residuals, cotangents):
  # Only the total is differentiated: the public functions return the terms through
  # stop_gradient, so their cotangents are zero.
  del eps, alpha, chunk
  d_s, d_table = residuals
  g = cotangents[0]
  return tuple(g * x for x in d_s), g * d_table, None, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused(ss, table, targets, weights, eps, alpha, chunk):
  return _forward(ss, table, targets, weights, eps, alpha, chunk)[0]


_fused.defvjp(_forward, _backward)


def cross_entropy_sums(
    s: jax.Array,
    table: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    label_smoothing: float = 0.0,
    chunk: int = 128,
) -> jax.Array:
  """Weighted sum of full-softmax cross-entropies of `s @ table.T`, column 0 masked.

  Equals `losses.softmax_cross_entropy_sums(mask_padding_column(s @ table.T), ...)[0]`
  in value and gradient (w.r.t. s and table). s [N, d], table [V, d], targets [N],
  weights [N] (rows with weight <= 0 add nothing).
  """
  return _fused((s,), table, targets, weights, float(label_smoothing), 0.0, int(chunk))[0]


def rdrop_sums(
    s1: jax.Array,
    s2: jax.Array,
    table: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    label_smoothing: float = 0.0,
    alpha: float = 1.0,
    chunk: int = 128,
) -> tuple[jax.Array, dict]:
  """R-Drop's loss for two passes' session vectors, fused and chunked.

  Returns (total, terms): total = ce + alpha * kl, differentiable w.r.t. s1, s2 and the
  table; terms = {"ce": mean of the two passes' weighted cross-entropy sums, "kl":
  weighted sum of the symmetric KL 0.5 (KL(p1||p2) + KL(p2||p1))}, for logging (no
  gradient). Equal in value and gradient to the same loss computed by `losses` on the
  materialised logits.
  """
  total, terms = _fused(
      (s1, s2), table, targets, weights, float(label_smoothing), float(alpha), int(chunk)
  )
  return total, jax.lax.stop_gradient(terms)
