"""The teacher's (single-model) training step: full-softmax next-item cross-entropy.

Two objectives over the same training targets (config.train.objective):
  'window': SASRec's — one causal pass over a window of max_len clicks predicts
            the next item at every position (per-position causal readout);
  'prefix': the paper's — one pass per prefix example, readout of the prefix.
Both see every training target once per epoch; 'window' shares the encoder
pass between the up-to-max_len prefixes of a window.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ccrec.models.recommender import SessionRecommender
from ccrec.ops import fused, losses, sampled
from ccrec.train.state import TrainState

OBJECTIVES = ("window", "prefix")


def session_targets(
    model: SessionRecommender,
    variables: dict,
    batch: dict,
    *,
    objective: str,
    key: jax.Array | None,
    table: jax.Array | None = None,
) -> tuple[dict, jax.Array, jax.Array, jax.Array]:
  """Forward pass of a training batch.

  Returns (model outputs, session vectors [N, d], targets [N], weights [N]) where
  N = B * L for 'window' batches and B for 'prefix' batches. `key` None means
  deterministic (no dropout).
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"train.objective must be one of {OBJECTIVES}, got {objective!r}")
  rngs = {} if key is None else {"dropout": key}
  out = model.apply(
      variables,
      batch["items"],
      deterministic=key is None,
      table=table,
      all_positions=objective == "window",
      rngs=rngs,
  )
  if objective == "window":
    d = out["positions"].shape[-1]
    return (
        out,
        out["positions"].reshape(-1, d),
        batch["targets"].reshape(-1),
        batch["weights"].reshape(-1),
    )
  return out, out["session"], batch["target"], batch["weight"]


def recommendation_loss(
    model: SessionRecommender,
    variables: dict,
    batch: dict,
    keys: list,
    *,
    objective: str,
    label_smoothing: float = 0.0,
    rdrop: float = 0.0,
    fused_chunk: int = 0,
    table: jax.Array | None = None,
    sampler: sampled.Sampler | None = None,
) -> tuple[jax.Array, dict, jax.Array]:
  """The next-item loss of a training batch: (differentiable sum, logged sums, count).

  One dropout pass per key: one for the cross-entropy, two for R-Drop (`rdrop` = alpha >
  0: the mean of the passes' cross-entropies + alpha x their symmetric KL, logged as 'ce'
  and 'rdrop'). `table` None scores against the model's own items, else against `table`
  (the student's training table). `fused_chunk` > 0 computes the loss from the session
  vectors and the table in chunks (`ccrec.ops.fused`), never materialising the logits.
  `sampler` (not with `fused_chunk`) scores a shared candidate set instead of every item:
  the sampled softmax of `ccrec.ops.sampled`, candidates drawn from a stream of keys[0];
  R-Drop's KL is then taken over the candidates too.
  Shared by the teacher step and the student's pre-training.
  """
  if sampler is not None and fused_chunk:
    raise ValueError("train.loss='sampled' needs train.fused_chunk=0")
  score_table = table  # fused: the table the chunks score against (built before the passes)
  if fused_chunk and table is None:
    score_table = model.apply(variables, method="table")
  passes = [
      session_targets(model, variables, batch, objective=objective, key=k, table=table)
      for k in keys
  ]
  _, s, targets, weights = passes[0]
  count = jnp.sum(weights)
  if fused_chunk:
    if rdrop > 0:
      total, terms = fused.rdrop_sums(
          s, passes[1][1], score_table, targets, weights, label_smoothing, rdrop, fused_chunk
      )
      return total, {"ce": terms["ce"], "rdrop": terms["kl"]}, count
    ce = fused.cross_entropy_sums(s, score_table, targets, weights, label_smoothing, fused_chunk)
    return ce, {"ce": ce}, count
  if sampler is not None:
    candidates = sampler.draw(keys[0], targets, weights)
    lookup = lambda ids: model.apply(variables, ids, table=table, method="lookup")
    logits = [
        sampled.candidate_logits(p[1], lookup, targets, candidates, sampler.log_counts(weights))
        for p in passes
    ]
    ce = [sampled.cross_entropy_sums(x, weights, label_smoothing)[0] for x in logits]
  else:
    logits = [model.apply(variables, p[1], table=table, method="score") for p in passes]
    ce = [
        losses.softmax_cross_entropy_sums(x, targets, weights, label_smoothing)[0] for x in logits
    ]
  if rdrop <= 0:
    return ce[0], {"ce": ce[0]}, count
  sym_kl = 0.5 * (
      losses.kl_soft_targets_sums(logits[0], logits[1], weights)[0]
      + losses.kl_soft_targets_sums(logits[1], logits[0], weights)[0]
  )
  mean_ce = 0.5 * (ce[0] + ce[1])
  return mean_ce + rdrop * sym_kl, {"ce": mean_ce, "rdrop": sym_kl}, count


def make_train_step(
    model: SessionRecommender,
    objective: str,
    *,
    name: str = "teacher",
    donate: bool = True,
    label_smoothing: float = 0.0,
    rdrop: float = 0.0,
    rdrop_detach: bool = False,
    fused_chunk: int = 0,
    sampler: sampled.Sampler | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """Returns a jitted `train_step(state, batch, key) -> (state, metric sums)`.

  The metrics are sums over the batch's targets plus 'count' (the number of
  weighted targets); the loop divides on the host. `label_smoothing` > 0 trains on
  smoothed targets (`losses.per_example_cross_entropy`); the logged `ce` is that loss.

  `rdrop` = alpha > 0 adds R-Drop (Liang et al., NeurIPS 2021): the batch is encoded
  twice with independent dropout masks, the cross-entropy is the mean of the two
  passes' and alpha times the symmetric KL between their next-item distributions is
  added per target (logged as `rdrop`). It costs a second forward and backward pass
  (an ml-100k step of 16 windows: 4x a plain one on 2 CPU cores, 2.5-2.8x with
  `fused_chunk`; BENCHMARKS.md §1).
  With 0 the step is the plain one, bit for bit.

  `rdrop_detach` makes the second pass a fixed target: forward only, no gradient,
  and the term is alpha KL(second || first); the cross-entropy is the first pass's.
  It costs a second forward pass only (1.3x a plain step there).

  `fused_chunk` > 0 computes the loss from the session vectors and the item table in
  chunks of that many rows, with closed-form gradients (`ccrec.ops.fused`), instead of
  materialising the [N, V] logits and differentiating through them: same loss and
  gradients up to float rounding, no N x V array beyond one chunk. For R-Drop on 2 CPU
  cores it cuts the step by a third (BENCHMARKS.md §1). Not with `rdrop_detach`.

  `sampler` trains with the sampled softmax (`ccrec.ops.sampled`, config train.loss=
  'sampled'); not with `fused_chunk` or `rdrop_detach`.
  """
  if fused_chunk and rdrop_detach:
    raise ValueError(
        "train.fused_chunk > 0 does not support train.rdrop_detach=True; " "set train.fused_chunk=0"
    )
  if sampler is not None and (fused_chunk or rdrop_detach):
    raise ValueError(
        "train.loss='sampled' needs train.fused_chunk=0 and " "train.rdrop_detach=False"
    )

  def loss_fn(params, state: TrainState, batch: dict, key: jax.Array):
    variables = state.variables(params)
    if not (rdrop > 0 and rdrop_detach):
      total, sums, count = recommendation_loss(
          model,
          variables,
          batch,
          [jax.random.fold_in(key, i) for i in range(1 + (rdrop > 0))],
          objective=objective,
          label_smoothing=label_smoothing,
          rdrop=rdrop,
          fused_chunk=fused_chunk,
          sampler=sampler,
      )
      return total / jnp.maximum(count, 1.0), (sums, count)
    _, s, targets, weights = session_targets(
        model, variables, batch, objective=objective, key=jax.random.fold_in(key, 0)
    )
    logits = model.apply(variables, s, method="score")
    ce_sum, count = losses.softmax_cross_entropy_sums(logits, targets, weights, label_smoothing)
    frozen = state.variables(jax.lax.stop_gradient(params))  # a constant: forward only
    _, s2, _, _ = session_targets(
        model, frozen, batch, objective=objective, key=jax.random.fold_in(key, 1)
    )
    other = model.apply(frozen, s2, method="score")
    kl = losses.kl_soft_targets_sums(other, logits, weights)[0]
    return (ce_sum + rdrop * kl) / jnp.maximum(count, 1.0), ({"ce": ce_sum, "rdrop": kl}, count)

  def train_step(state: TrainState, batch: dict, key: jax.Array):
    grads, (sums, count) = jax.grad(loss_fn, has_aux=True)(state.params, state, batch, key)
    return state.apply_gradients(grads), {
        **{f"{name}/{k}": v for k, v in sums.items()},
        "count": count,
    }

  return jax.jit(train_step, donate_argnums=(0,) if donate else ())
