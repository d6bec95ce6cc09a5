"""Loss functions of the method (docs/method.md §2.4, §3, §4). Pure jnp.

Conventions:
  * Every loss takes per-example `weights` (0 for filler/padding examples) and
    comes in two forms: `*_sums(...) -> (sum, count)` (sum of weighted
    per-example losses, sum of weights; for accumulating and for metrics that
    are divided on the host) and the plain name -> weighted mean
    sum / count (0 when count == 0).
  * Logits may hold -inf (the padding column 0 when all items are scored);
    no value or gradient becomes NaN because of it, as long as every example
    with weight > 0 has a finite target logit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
  """total / count, 0 when count == 0 (and no NaN gradient)."""
  return total / jnp.where(count > 0, count, 1.0)


def _weights_like(weights: jax.Array | None, shape) -> jax.Array:
  if weights is None:
    return jnp.ones(shape, jnp.float32)
  return jnp.broadcast_to(jnp.asarray(weights, jnp.float32), shape)


# --- softmax cross-entropy ------------------------------------------------------


def per_example_cross_entropy(
    logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """[..., V] logits, [...] int targets -> [...] -log softmax(logits)[target].

  With `label_smoothing` = eps > 0 the target distribution is (1 - eps) one-hot +
  eps uniform over the real items, columns 1.. (column 0 is the padding id, which
  is never a target and may hold -inf): the loss is
  logsumexp(logits) - (1 - eps) logit[target] - eps mean_{v >= 1} logit[v].
  """
  log_z = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  if not label_smoothing:
    return log_z - picked
  # A column mask rather than a slice: an item-sharded logits array stays sharded.
  real = jnp.arange(logits.shape[-1]) > 0
  uniform = jnp.sum(jnp.where(real, logits, 0.0), axis=-1) / (logits.shape[-1] - 1)
  return log_z - (1.0 - label_smoothing) * picked - label_smoothing * uniform


def softmax_cross_entropy_sums(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """Weighted sum of per-example cross-entropies and the sum of weights.

  Args:
    logits: [..., V] (e.g. [N, V+1] or [B, L, V+1]); column 0 may be -inf.
    targets: [...] int item ids.
    weights: [...] float, 0 for examples to ignore (their target may be the
      padding id 0, whose -inf logit would give +inf; it is masked out).
    label_smoothing: eps of `per_example_cross_entropy` (0 = plain cross-entropy).

  Returns:
    (sum, count), two float32 scalars.
  """
  w = _weights_like(weights, targets.shape)
  ce = per_example_cross_entropy(logits, targets, label_smoothing)
  ce = jnp.where(w > 0, ce, 0.0)
  return jnp.sum(w * ce), jnp.sum(w)


def softmax_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> jax.Array:
  """Weighted mean cross-entropy, scalar. Shapes as `softmax_cross_entropy_sums`."""
  return _safe_mean(*softmax_cross_entropy_sums(logits, targets, weights, label_smoothing))


# --- KL to soft targets --------------------------------------------------------


def per_example_kl(
    teacher_logits: jax.Array, student_logits: jax.Array, temperature: float = 1.0
) -> jax.Array:
  """[..., V] x2 -> [...] KL(softmax(t / T) || softmax(s / T)).

  Terms where the teacher probability is exactly 0 (e.g. a -inf padding column
  in both) contribute 0 (0 log 0 = 0), in value and gradient.
  """
  log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  p = jnp.exp(log_p)
  support = p > 0
  # Replace both logs outside the support before subtracting: -inf - -inf would
  # be NaN in the unselected branch and poison the gradient through jnp.where.
  diff = jnp.where(support, log_p, 0.0) - jnp.where(support, log_q, 0.0)
  return jnp.sum(jnp.where(support, p * diff, 0.0), axis=-1)


def kl_soft_targets_sums(
    teacher_logits: jax.Array,
    student_logits: jax.Array,
    weights: jax.Array | None = None,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """(sum of weighted per-example KL, sum of weights); logits [..., V], weights [...]."""
  w = _weights_like(weights, teacher_logits.shape[:-1])
  kl = jnp.where(w > 0, per_example_kl(teacher_logits, student_logits, temperature), 0.0)
  return jnp.sum(w * kl), jnp.sum(w)


def kl_soft_targets(
    teacher_logits: jax.Array,
    student_logits: jax.Array,
    weights: jax.Array | None = None,
    temperature: float = 1.0,
) -> jax.Array:
  """Mean over weighted examples of KL(softmax(t/T) || softmax(s/T)), scalar.

  docs/method.md §4 / §7.1: L_soft, reduced as the mean over the batch of per-example
  KL. No T^2 factor (the paper uses T = 1). Gradients flow into both logits;
  wrap the teacher's in jax.lax.stop_gradient for the frozen-teacher ablation.
  """
  return _safe_mean(*kl_soft_targets_sums(teacher_logits, student_logits, weights, temperature))


# --- InfoNCE -------------------------------------------------------------------


def l2_normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """[..., d] -> unit rows (zero rows stay zero; finite gradient at 0)."""
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def info_nce_sums(
    z1: jax.Array,
    z2: jax.Array,
    weights: jax.Array | None = None,
    temperature: float = 0.2,
    symmetric: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """(sum of weighted per-row InfoNCE, sum of weights). See `info_nce`."""
  batch = z1.shape[0]
  w = _weights_like(weights, (batch,))
  valid = w > 0
  sim = (l2_normalize(z1) @ l2_normalize(z2).T) / temperature  # [B, B]
  pair_ok = valid[:, None] & valid[None, :]
  sim = jnp.where(pair_ok, sim, -jnp.inf)
  positive = jnp.diagonal(jnp.where(pair_ok, sim, 0.0))  # finite

  def direction(s):
    # Rows without a valid anchor are all -inf; give them a finite lse.
    lse = jax.nn.logsumexp(jnp.where(valid[:, None], s, 0.0), axis=-1)
    return jnp.where(valid, lse - positive, 0.0)

  loss = direction(sim)
  if symmetric:
    loss = 0.5 * (loss + direction(sim.T))
  return jnp.sum(w * loss), jnp.sum(w)


def info_nce(
    z1: jax.Array,
    z2: jax.Array,
    weights: jax.Array | None = None,
    temperature: float = 0.2,
    symmetric: bool = False,
) -> jax.Array:
  """InfoNCE with cosine similarity over the batch (docs/method.md §4), scalar.

  For anchor row i (weight > 0): -log( exp(cos(z1_i, z2_i)/T) /
  sum_j exp(cos(z1_i, z2_j)/T) ), j over rows with weight > 0. The positive is
  the same session's other view; the negatives are the other sessions' views
  in the *other* view (one-directional, z1 -> z2, as §4 states it:
  "negatives = the other sessions' views"). `symmetric=True` averages the
  z1 -> z2 and z2 -> z1 directions. Rows with weight 0 (length-1 sessions,
  filler rows) are neither anchors, positives nor negatives.

  Args:
    z1, z2: [B, d] the two views (e.g. z_tea, z_stu).
    weights: [B] float.
    temperature: T (0.2 in the paper).

  Returns:
    Weighted mean over anchors; 0 if no row has weight > 0.
  """
  return _safe_mean(*info_nce_sums(z1, z2, weights, temperature, symmetric))


# --- reconstruction --------------------------------------------------------------


def reconstruction_mse_sums(
    pred: jax.Array, target: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """(sum_i w_i ||pred_i - target_i||^2, sum_i w_i); pred, target [N, d], weights [N]."""
  w = _weights_like(weights, pred.shape[:-1])
  sq = jnp.sum(jnp.square(pred - target), axis=-1)
  return jnp.sum(w * sq), jnp.sum(w)


def reconstruction_mse(
    pred: jax.Array, target: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
  """L_mse = (1/|V|) sum_v ||e_v - X_v||^2 (docs/method.md §3): weighted mean over rows of the
  squared L2 norm (summed over d, not averaged). pred, target [N, d]; weights [N]."""
  return _safe_mean(*reconstruction_mse_sums(pred, target, weights))
