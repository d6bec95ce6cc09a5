"""Full-ranking metrics as sums and counts (docs/method.md §5, DESIGN.md "Metric keys").

The rank rule and the metrics of one example are `ccrec.evaluation.ranking`'s: ties
count AGAINST the target. With continuous scores ties do not occur; with compositional
codes two items that share a full code score exactly alike, and counting ties in the
target's favour would reward code collisions (all items on one code would give HR = 1).
Device code returns weighted sums plus "count" (sum of weights); `finalize`
divides on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from ccrec.evaluation import ranking
from ccrec.evaluation.ranking import KS

# score_fn(s [B, d], ids int32 [N]) -> [B, N]; target_score_fn(s [B, d], target [B]) -> [B].
ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
TargetScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def target_rank(scores: jax.Array, target: jax.Array) -> jax.Array:
  """Exact rank of each target among all items.

  Args:
    scores: [B, V+1] scores of every id (column 0, padding, is ignored
      whatever its value).
    target: [B] int item ids in 1..V (filler rows may hold anything; mask
      them with a zero weight in `metric_sums`).

  Returns:
    int32 [B]: number of other items in 1..V scoring higher than or equal to the
    target (ties count against the target).
  """
  return ranking.target_rank(scores, target, xp=jnp)


def _diagonal_target_score(score_fn: ScoreFn) -> TargetScoreFn:
  def target_score(s, target):
    return jnp.diagonal(score_fn(s, target))  # [B, B] -> [B]

  return target_score


def chunked_target_rank(
    score_fn: ScoreFn,
    s: jax.Array,
    target: jax.Array,
    num_items: int,
    chunk_size: int,
    target_score_fn: TargetScoreFn | None = None,
) -> jax.Array:
  """`target_rank` without the [B, V+1] score matrix: memory O(B * chunk_size).

  Items 1..V are scored in ceil(V / chunk_size) chunks of static shape inside a
  `jax.lax.fori_loop`; the last chunk's ids beyond V are clipped to V for
  scoring and masked out of the count. Jittable (num_items and chunk_size are
  Python ints).

  The target's own score comes from `target_score_fn(s, target) -> [B]`, by
  default the diagonal of `score_fn(s, target)` ([B, B]: cheap for the usual
  batch sizes, and the same computation as the chunks). The target's own
  column is excluded from the count, so a target is never ranked below itself
  when the two computations round differently.

  Args:
    score_fn: (s [B, d], ids int32 [N]) -> [B, N] scores of those ids.
    s: [B, d] session representations.
    target: [B] int target ids.
    num_items: V.
    chunk_size: items per chunk (> 0).
    target_score_fn: optional (s [B, d], target [B]) -> [B].

  Returns:
    int32 [B], equal to `target_rank(score_fn(s, arange(V+1)), target)` up to
    rounding differences between the chunked and the one-shot computation.
  """
  if chunk_size <= 0:
    raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
  target = target.astype(jnp.int32)
  target_score_fn = target_score_fn or _diagonal_target_score(score_fn)
  own = target_score_fn(s, target)[:, None]  # [B, 1]
  num_chunks = -(-num_items // chunk_size)
  offsets = jnp.arange(chunk_size, dtype=jnp.int32)

  def body(c, count):
    ids = 1 + c * chunk_size + offsets  # [chunk]
    valid = ids <= num_items
    scores = score_fn(s, jnp.minimum(ids, num_items))  # [B, chunk]
    higher = (scores >= own) & valid[None, :] & (ids[None, :] != target[:, None])
    return count + jnp.sum(higher, axis=1, dtype=jnp.int32)

  return jax.lax.fori_loop(0, num_chunks, body, jnp.zeros(target.shape, jnp.int32))


def metric_sums(rank: jax.Array, weight: jax.Array, ks: Sequence[int] = KS) -> dict[str, jax.Array]:
  """Weighted metric sums.

  Args:
    rank: [B] int ranks (0 = best).
    weight: [B] float, 0 for filler rows.
    ks: cut-offs.

  Returns:
    {"HR@k", "MRR@k", "NDCG@k" for k in ks, "count"}: float32 scalars; "count"
    is the sum of weights.
  """
  weight = weight.astype(jnp.float32)
  r = rank.astype(jnp.float32)
  out = {}
  for k in ks:
    hit = (rank < k).astype(jnp.float32) * weight
    out[f"HR@{k}"] = jnp.sum(hit)
    out[f"MRR@{k}"] = jnp.sum(hit / (r + 1.0))
    out[f"NDCG@{k}"] = jnp.sum(hit / jnp.log2(r + 2.0))
  out["count"] = jnp.sum(weight)
  return out


def finalize(sums: Mapping[str, float]) -> dict[str, float]:
  """Host-side means: {metric: sum / count} for every key except "count".

  Division on the host in float64. NaN for every metric if count == 0.
  """
  count = float(sums["count"])
  return {
      name: (float(value) / count if count > 0 else float("nan"))
      for name, value in sums.items()
      if name != "count"
  }
