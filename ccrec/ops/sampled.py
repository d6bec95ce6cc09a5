"""Sampled softmax over a shared candidate set, with the log-Q correction.

The full next-item softmax scores every item ([N, V+1] logits per step). With a large
catalog the recommendation cross-entropies and the distillation soft targets are
instead computed over one candidate set per step, shared by every row of the batch:

  candidates = the batch's targets (N ids, 0 for filler rows) + S items drawn with
  replacement from Q, the training popularity (Q(v) proportional to count(v)).

The batch's targets are themselves draws from (about) the same distribution, so every
candidate column holding item v is corrected by the expected number of times v enters
the set (Jean et al. 2015; Yi et al. 2019):

  l(v) = <s, e_v> - log(E[count of v]),   E[count of v] = (n + S) Q(v),

with n the number of real (weight > 0) targets in the batch. The factor n + S is the
same for every column and cancels in every softmax; it is kept so that the corrected
logits are what the formula says.

Per row the logits are laid out [N, 1 + C]: column 0 is the row's own target (its
positive, corrected like any candidate), columns 1..C the candidates. A candidate
column equal to the row's target (the row's own entry among the batch's targets,
another row with the same target, or a draw that hit it) is masked to -inf, so the
positive counts once, in column 0; so are columns of the padding id 0 (filler rows'
targets). Other duplicates stay: the correction accounts for them in expectation.

With every item 1..V as the candidates and a uniform Q the corrections are one
constant, and the loss, its label smoothing and the soft-target KL equal the full ones
(tests/test_sampled.py).

Label smoothing over the candidate set: the target distribution puts 1 - eps on the
positive and eps uniformly over the row's unmasked columns (the positive and its
negatives), on the corrected logits:
  loss = logsumexp(l) - (1 - eps) l[0] - eps mean_{unmasked c} l[c].
With popularity-drawn negatives this spreads eps over a popularity-biased sample of the
catalog, not uniformly over all items as the full loss does.

Soft targets (distillation): KL(softmax(l_teacher) || softmax(l_student)) over the
same [N, 1 + C] columns, both models corrected alike (`ccrec.ops.losses.per_example_kl`
drops the masked columns).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ccrec.ops import losses

LOSSES = ("full", "sampled")
STREAM = 0x5A3  # fold_in constant of the candidate draws (independent of the dropout streams)


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
  """S popularity draws per step and the log-Q correction of every item.

  Attributes:
    num_negatives: S, items drawn per step (shared by the batch).
    cdf: float32 [V + 1], cdf[0] = 0: cumulative popularity; item v is drawn when a
      uniform u * cdf[-1] falls in [cdf[v - 1], cdf[v]).
    log_q: float32 [V + 1], log Q(v) of exactly that sampler (items it never draws get
      the smallest log Q of the items it does).
  """

  num_negatives: int
  cdf: jax.Array
  log_q: jax.Array

  @classmethod
  def from_counts(cls, item_counts: np.ndarray, num_negatives: int) -> "Sampler":
    """Q(v) proportional to item_counts[v] (int [V + 1], [0] ignored)."""
    counts = np.asarray(item_counts, np.float64).copy()
    counts[0] = 0.0
    if num_negatives < 1:
      raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if not counts.sum() > 0:
      raise ValueError("sampled softmax needs some item with a training count > 0")
    cdf = np.cumsum(counts).astype(np.float32)
    # The probabilities of the float32 sampler itself, so the correction is exact for it.
    q = np.diff(cdf.astype(np.float64), prepend=0.0) / float(cdf[-1])
    log_q = np.log(np.where(q > 0, q, q[q > 0].min()))
    return cls(int(num_negatives), jnp.asarray(cdf), jnp.asarray(log_q, jnp.float32))

  @classmethod
  def uniform(cls, num_items: int, num_negatives: int) -> "Sampler":
    counts = np.ones(num_items + 1)
    return cls.from_counts(counts, num_negatives)

  def draw(self, key: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """int32 [N + S]: the batch's targets (0 where weight <= 0), then S popularity draws."""
    u = jax.random.uniform(jax.random.fold_in(key, STREAM), (self.num_negatives,))
    drawn = jnp.searchsorted(self.cdf, u * self.cdf[-1], side="right")
    drawn = jnp.clip(drawn, 1, self.cdf.shape[0] - 1)
    own = jnp.where(weights.reshape(-1) > 0, targets.reshape(-1), 0)
    return jnp.concatenate([own, drawn]).astype(jnp.int32)

  def log_counts(self, weights: jax.Array) -> jax.Array:
    """float32 [V + 1]: log E[count of v] = log((n + S) Q(v)); n = targets with weight > 0."""
    n = jnp.sum(weights > 0) + self.num_negatives
    return self.log_q + jnp.log(n.astype(jnp.float32))


def candidate_logits(
    s: jax.Array,
    lookup: Callable[[jax.Array], jax.Array],
    targets: jax.Array,
    candidates: jax.Array,
    log_counts: jax.Array | None = None,
) -> jax.Array:
  """Corrected logits [N, 1 + C]: column 0 the row's target, then the candidates.

  Args:
    s: [N, d] session vectors.
    lookup: item ids int [K] -> rows [K, d] (a model's `lookup`, or `table[ids]`): only
      the targets' and candidates' rows are read, so only they receive gradients.
    targets: int [N] (0 for filler rows; their losses are weighted out).
    candidates: int [C] item ids shared by the rows (0 = masked column).
    log_counts: float [V + 1] log expected counts subtracted per item; None = no correction.

  Returns:
    [N, 1 + C]; a candidate column equal to the row's target, or holding id 0, is -inf.
  """
  targets = targets.reshape(-1)
  n = targets.shape[0]
  rows = lookup(jnp.concatenate([targets, candidates]))  # [N + C, d]
  positive = jnp.sum(s * rows[:n], axis=-1)  # [N]
  negative = s @ rows[n:].T  # [N, C]
  if log_counts is not None:
    positive = positive - jnp.take(log_counts, targets, axis=0)
    negative = negative - jnp.take(log_counts, candidates, axis=0)[None, :]
  # A column equal to the row's target (the positive is column 0) or to padding is masked.
  hits = (candidates[None, :] == targets[:, None]) | (candidates == 0)[None, :]
  negative = jnp.where(hits, -jnp.inf, negative)
  return jnp.concatenate([positive[:, None], negative], axis=1)


def cross_entropy_sums(
    logits: jax.Array, weights: jax.Array, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array]:
  """(weighted sum, sum of weights) of the sampled cross-entropy; logits [N, 1 + C] as
  `candidate_logits` lays them out (the positive in column 0), weights [N]."""
  w = jnp.asarray(weights, jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  loss = lse - logits[:, 0]
  if label_smoothing:
    live = jnp.isfinite(logits)
    mean = jnp.sum(jnp.where(live, logits, 0.0), axis=-1) / jnp.sum(live, axis=-1)
    loss = lse - (1.0 - label_smoothing) * logits[:, 0] - label_smoothing * mean
  loss = jnp.where(w > 0, loss, 0.0)
  return jnp.sum(w * loss), jnp.sum(w)


def kl_sums(
    teacher_logits: jax.Array,
    student_logits: jax.Array,
    weights: jax.Array,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """Soft-target KL over the candidate columns: `losses.kl_soft_targets_sums` on
  [N, 1 + C] logits of both models (the same masked columns)."""
  return losses.kl_soft_targets_sums(teacher_logits, student_logits, weights, temperature)


def from_config(train_config, item_counts: np.ndarray) -> Sampler | None:
  """The Sampler of config.train (loss, num_negatives); None for the full softmax."""
  if train_config.get("loss", "full") == "full":
    return None
  if train_config.loss != "sampled":
    raise ValueError(f"train.loss must be one of {LOSSES}, got {train_config.loss!r}")
  return Sampler.from_counts(item_counts, train_config.num_negatives)
