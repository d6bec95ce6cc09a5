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

from ccrec.data import Examples, prefix_batches
from ccrec.evaluation import metrics as metrics_lib

EncodeFn = Callable[[Any, jax.Array], jax.Array]  # (variables, items [B, L]) -> s [B, d]
ScoreFn = Callable[[Any, jax.Array, jax.Array | None], jax.Array]  # (vars, s, ids) -> scores

KS = (5, 10, 20)


def make_eval_step(encode: EncodeFn, score: ScoreFn, *, num_items: int, hot: np.ndarray,
                   ks=KS, item_chunk: int = 0) -> Callable[[Any, dict], dict]:
  """Returns a jitted `eval_step(variables, batch) -> {group: metric sums}`.

  item_chunk > 0 scores the catalog in chunks of that many items (memory
  O(batch * item_chunk)); 0 scores all items at once.
  """
  hot = jnp.asarray(hot, bool)

  def eval_step(variables, batch):
    s = encode(variables, batch["items"])
    target = batch["target"]
    if item_chunk and item_chunk < num_items:
      rank = metrics_lib.chunked_target_rank(lambda ss, ids: score(variables, ss, ids), s,
                                             target, num_items, item_chunk)
    else:
      rank = metrics_lib.target_rank(score(variables, s, None), target)
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

  def __init__(self, model_name: str, encode: EncodeFn, score: ScoreFn, *, num_items: int,
               hot: np.ndarray, batch_size: int, max_len: int, ks=KS, item_chunk: int = 0,
               to_device: Callable[[dict], Any] = lambda b: b):
    self.model_name = model_name
    self.batch_size = batch_size
    self.max_len = max_len
    self.to_device = to_device
    self._step = make_eval_step(encode, score, num_items=num_items, hot=hot, ks=ks,
                                item_chunk=item_chunk)

  def evaluate(self, variables: Any, split: str, examples: Examples) -> dict[str, float]:
    if len(examples.targets) == 0:
      raise ValueError(f"cannot evaluate {self.model_name} on an empty {split!r} split")
    total = None
    for batch in prefix_batches(examples, self.batch_size, self.max_len):
      sums = self._step(variables, self.to_device(batch))
      total = sums if total is None else jax.tree.map(operator.add, total, sums)
    out = {}
    for group, group_sums in jax.device_get(total).items():
      host = {k: float(v) for k, v in group_sums.items()}
      if host["count"] == 0:
        continue  # e.g. no cold targets in this split
      for name, value in metrics_lib.finalize(host).items():
        out[f"{self.model_name}/{split}{group}/{name}"] = value
      out[f"{self.model_name}/{split}{group}/count"] = host["count"]
    return out
