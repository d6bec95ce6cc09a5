"""Full-ranking evaluator, used during training and from checkpoints alike.

Every example of a split is counted exactly once (the last batch is filled
with zero-weight rows). Metrics are accumulated on device as sums and counts
and divided on the host. The rank of a target is the number of non-padding
items scoring strictly higher (ties count against the target). Targets are also
broken down into hot (top 20% by training popularity) and cold.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ccrec import console, parallel
from ccrec.data import Examples, num_batches, prefix_batches
from ccrec.evaluation import metrics as metrics_lib

EncodeFn = Callable[[Any, jax.Array], jax.Array]  # (variables, items [B, L]) -> s [B, d]
ScoreFn = Callable[[Any, jax.Array, jax.Array | None], jax.Array]  # (vars, s, ids) -> scores


def make_rank_fn(
    encode: EncodeFn, score: ScoreFn, *, num_items: int, item_chunk: int = 0
) -> Callable[[Any, dict], jax.Array]:
  """`rank(variables, batch) -> int32 [B]`: each target's rank among all items (not jitted).

  item_chunk > 0 scores the catalog in chunks of that many items (memory
  O(batch * item_chunk)); 0 scores all items at once.
  """

  def rank(variables, batch):
    s = encode(variables, batch["items"])
    target = batch["target"]
    if item_chunk and item_chunk < num_items:
      return metrics_lib.chunked_target_rank(
          lambda ss, ids: score(variables, ss, ids), s, target, num_items, item_chunk
      )
    return metrics_lib.target_rank(score(variables, s, None), target)

  return rank


def make_eval_step(
    rank_fn: Callable[[Any, dict], jax.Array], *, hot: np.ndarray, ks=metrics_lib.KS
) -> Callable[[Any, dict], dict]:
  """Returns a jitted `eval_step(variables, batch) -> {group: metric sums}` (ranks from
  `rank_fn`, see make_rank_fn)."""
  hot = jnp.asarray(hot, bool)

  def eval_step(variables, batch):
    rank = rank_fn(variables, batch)
    target = batch["target"]
    weight = batch["weight"]
    target_hot = jnp.take(hot, target).astype(weight.dtype)
    return {
        "": metrics_lib.metric_sums(rank, weight, ks),
        "_hot": metrics_lib.metric_sums(rank, weight * target_hot, ks),
        "_cold": metrics_lib.metric_sums(rank, weight * (1 - target_hot), ks),
    }

  return jax.jit(eval_step)


class Evaluator:
  """Evaluates one model on named splits; returns `{model}/{split}{group}/{metric}@{k}`."""

  def __init__(
      self,
      model_name: str,
      encode: EncodeFn,
      score: ScoreFn,
      *,
      num_items: int,
      hot: np.ndarray,
      batch_size: int,
      max_len: int,
      ks=metrics_lib.KS,
      item_chunk: int = 0,
      to_device: Callable[[dict], Any] = lambda b: b,
  ):
    self.model_name = model_name
    self.batch_size = batch_size
    self.max_len = max_len
    self.to_device = to_device
    rank_fn = make_rank_fn(encode, score, num_items=num_items, item_chunk=item_chunk)
    self._step = make_eval_step(rank_fn, hot=hot, ks=ks)
    self._rank_step = jax.jit(lambda variables, batch: (rank_fn(variables, batch), batch["weight"]))

  def evaluate(self, variables: Any, split: str, examples: Examples) -> dict[str, float]:
    if len(examples.targets) == 0:
      raise ValueError(f"cannot evaluate {self.model_name} on an empty {split!r} split")
    total = None
    batches = num_batches(len(examples.targets), self.batch_size)
    with console.Progress(f"[{self.model_name}] evaluating {split}: batch", batches) as bar:
      for i, batch in enumerate(prefix_batches(examples, self.batch_size, self.max_len)):
        sums = self._step(variables, self.to_device(batch))
        total = sums if total is None else jax.tree.map(operator.add, total, sums)
        bar.update(i + 1)
    out = {}
    for group, group_sums in jax.device_get(total).items():
      host = {k: float(v) for k, v in group_sums.items()}
      if host["count"] == 0:
        continue  # e.g. no cold targets in this split
      for name, value in metrics_lib.finalize(host).items():
        out[f"{self.model_name}/{split}{group}/{name}"] = value
      out[f"{self.model_name}/{split}{group}/count"] = host["count"]
    return out

  def ranks(self, variables: Any, examples: Examples) -> np.ndarray:
    """int64 [N]: the rank of every example's target (0 = best), in the order of `examples`.

    The per-example form of `evaluate` (same batches, same rank rule): the mean of
    `significance.per_example(ranks, "NDCG@10")` is its NDCG@10.
    """
    if len(examples.targets) == 0:
      raise ValueError(f"cannot rank {self.model_name} on an empty split")
    out = []
    for batch in prefix_batches(examples, self.batch_size, self.max_len):
      rank, weight = parallel.to_host(self._rank_step(variables, self.to_device(batch)))
      out.append(rank[weight > 0].astype(np.int64))  # filler rows only pad the last batch
    ranks = np.concatenate(out)
    if ranks.size != len(examples.targets):
      raise AssertionError(f"ranked {ranks.size} of {len(examples.targets)} examples")
    return ranks
