"""Learning compositional codes on a trained item table (docs/method.md §3.1, stage 'codes').

`learn_codes` trains a `CodeLearner` (Gumbel-softmax autoencoder) with Adam on
random item batches, checks the full-table reconstruction loss of the
noise-free argmax codes every `eval_every` steps, stops when it has not
improved by a relative `tolerance` for `patience` checks (or at `max_steps`),
and returns the codes and codebooks of the best check.

Every step can weight the items (`item_weights`, e.g.
`code_refinement.popularity_weights`): the objective is then
(1/sum w) sum_v w_v ||e_v - X_v||^2, so the codes spend their few codewords
where the weights are high. The exact least-squares steps that follow
learning (refit, refinement, de-duplication) are in `code_refinement`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ccrec.item_layout import code_dtype
from ccrec.models.code_learner import CodeLearner
from ccrec.ops import losses
from ccrec.train.code_refinement import check_item_weights

_EVAL_CHUNK = 16384  # items per chunk of the full-table check (memory O(chunk * M * K))


@dataclasses.dataclass
class CodeResult:
  """Output of `learn_codes`.

  codes: [V+1, M] uint8/uint16, row 0 (padding) = 0.
  codebooks: float32 [M, K, d], to initialise the student's codebooks.
  history: full-table reconstruction loss (1/V) sum_v ||e_v - X_v||^2 of the
    argmax codes, one value per check (every `eval_every` steps; over the checks'
    sample of items with check_items > 0).
  report: `code_report` of the codes plus mse (best check, the returned
    codes'), relative_mse (mse / table_variance), table_variance
    ((1/V) sum_v ||X_v - mean||^2), steps, best_step, stopped_early.
  """

  codes: np.ndarray
  codebooks: np.ndarray
  history: list[float]
  report: dict[str, Any]


def code_report(
    codes: np.ndarray, codebook_size: int, *, skip_padding_row: bool = True
) -> dict[str, Any]:
  """Codeword usage statistics.

  Args:
    codes: [N, M] integer codes; by default row 0 is the padding row of an
      item-id-indexed array ([V+1, M]) and is skipped.
    codebook_size: K.

  Returns:
    usage: int64 [M, K] items per codeword (for a heatmap);
    perplexity: float64 [M], exp(entropy) of each codebook's usage (K = uniform);
    dead_codewords: int64 [M], codewords no item uses;
    collisions: int, items whose full code is shared with at least one other item;
    unique_codes: int, distinct full codes;
    mean_perplexity, min_perplexity, total_dead_codewords, num_items: scalars.
  """
  codes = np.asarray(codes)
  if skip_padding_row:
    codes = codes[1:]
  codes = codes.astype(np.int64)
  num, m = codes.shape
  usage = np.stack([np.bincount(codes[:, j], minlength=codebook_size) for j in range(m)])
  p = usage / max(num, 1)
  with np.errstate(divide="ignore", invalid="ignore"):
    entropy = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
  perplexity = np.exp(entropy)
  dead = np.sum(usage == 0, axis=1)
  _, counts = np.unique(codes, axis=0, return_counts=True)
  return {
      "usage": usage,
      "perplexity": perplexity,
      "dead_codewords": dead,
      "collisions": int(counts[counts > 1].sum()),
      "unique_codes": len(counts),
      "mean_perplexity": float(perplexity.mean()) if m else 0.0,
      "min_perplexity": float(perplexity.min()) if m else 0.0,
      "total_dead_codewords": int(dead.sum()),
      "num_items": int(num),
  }


_STATIC = ("num_codebooks", "codebook_size", "temperature")


def _model(x: jax.Array, num_codebooks: int, codebook_size: int, temperature: float) -> CodeLearner:
  return CodeLearner(num_codebooks, codebook_size, x.shape[-1], temperature)


@functools.partial(jax.jit, static_argnames=_STATIC + ("features",))
def _init_params(key, *, features: int, num_codebooks: int, codebook_size: int, temperature: float):
  model = CodeLearner(num_codebooks, codebook_size, features, temperature)
  return model.init(key, jnp.zeros((1, features)))["params"]


@functools.partial(
    jax.jit,
    static_argnames=_STATIC + ("num_items", "learning_rate", "batch_size"),
    donate_argnames=("params", "opt_state"),
)
def _train_steps(
    params,
    opt_state,
    chunks,
    key,
    start,
    num_steps,
    probs=None,
    *,
    num_items: int,
    num_codebooks: int,
    codebook_size: int,
    temperature: float,
    learning_rate: float,
    batch_size: int,
):
  """`num_steps` (traced) Adam steps on random batches of the items; step s uses fold_in(key, s).

  chunks: [C, S, d], the items 0..num_items-1 then zero filler (`_chunked`, the array the
  checks read: one copy of the table on the device). probs: None (uniform batches) or
  [num_items] sampling probabilities (item weights / their sum), so the expected batch loss
  is the weighted reconstruction loss.
  """
  x = chunks.reshape(-1, chunks.shape[-1])  # [C*S, d]; batches draw from the first num_items
  model = _model(x, num_codebooks, codebook_size, temperature)
  optimizer = optax.adam(learning_rate)

  def loss_fn(p, xb, gumbel_key):
    recon = model.apply({"params": p}, xb, train=True, rngs={"gumbel": gumbel_key})
    return losses.reconstruction_mse(recon, xb)

  def body(i, carry):
    p, state, total = carry
    batch_key, gumbel_key = jax.random.split(jax.random.fold_in(key, start + i))
    if probs is None:
      idx = jax.random.randint(batch_key, (batch_size,), 0, num_items)
    else:
      idx = jax.random.choice(batch_key, num_items, (batch_size,), p=probs)
    loss, grads = jax.value_and_grad(loss_fn)(p, jnp.take(x, idx, axis=0), gumbel_key)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state, total + loss

  params, opt_state, total = jax.lax.fori_loop(
      0, num_steps, body, (params, opt_state, jnp.zeros((), jnp.float32))
  )
  return params, opt_state, total / jnp.maximum(num_steps, 1)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _check(params, chunks, weights, *, num_codebooks: int, codebook_size: int, temperature: float):
  """chunks [C, S, d], weights [C, S] -> (sum of squared errors of the argmax codes,
  codes [C*S, M])."""
  model = _model(chunks, num_codebooks, codebook_size, temperature)

  def one(args):
    xc, wc = args
    # The encoder once per chunk: the argmax codes, and their reconstruction (what
    # model(xc, train=False) gives).
    log_alpha = model.apply({"params": params}, xc, method="log_alpha")
    best = jnp.argmax(log_alpha, axis=-1)
    one_hot = jax.nn.one_hot(best, codebook_size, dtype=log_alpha.dtype)
    recon = model.apply({"params": params}, one_hot, method="decode")
    codes = best.astype(code_dtype(codebook_size))
    return losses.reconstruction_mse_sums(recon, xc, wc)[0], codes

  sums, codes = jax.lax.map(one, (chunks, weights))
  return jnp.sum(sums), codes.reshape(-1, num_codebooks)


def _chunked(
    x: np.ndarray, chunk: int, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """[V, d] -> ([C, chunk, d] zero-padded, weights [C, chunk]: w (default 1), 0 for filler)."""
  num = x.shape[0]
  num_chunks = -(-num // chunk)
  padded = np.zeros((num_chunks * chunk, x.shape[1]), np.float32)
  padded[:num] = x
  weights = np.zeros(num_chunks * chunk, np.float32)
  weights[:num] = 1.0 if w is None else w
  return padded.reshape(num_chunks, chunk, -1), weights.reshape(num_chunks, chunk)


def learner_options(codes_config: Any) -> dict[str, Any]:
  """`learn_codes`' settings from an experiment config's codes section (config.codes)."""
  c = codes_config
  return dict(
      num_codebooks=c.num_codebooks,
      codebook_size=c.codebook_size,
      temperature=c.temperature,
      learning_rate=c.learning_rate,
      batch_size=c.batch_size,
      max_steps=c.max_steps,
      eval_every=c.eval_every,
      patience=c.patience,
      tolerance=c.tolerance,
      check_items=c.get("check_items", 0),
  )


def learn_codes(
    table: np.ndarray,
    *,
    num_codebooks: int,
    codebook_size: int,
    temperature: float = 0.3,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    max_steps: int = 20000,
    eval_every: int = 200,
    patience: int = 10,
    tolerance: float = 1e-3,
    seed: int | jax.Array = 0,
    item_weights: np.ndarray | None = None,
    check_items: int = 0,
    on_check: Callable[[int, float], None] | None = None,
) -> CodeResult:
  """Learns codes for the rows 1..V of `table` (row 0, padding, is left out).

  Args:
    table: [V+1, d] item table (e.g. the trained teacher's).
    num_codebooks: M. codebook_size: K. temperature: Gumbel-softmax tau.
    learning_rate: Adam step size. batch_size: items per step (capped at V).
    max_steps: upper bound on steps. eval_every: steps between full-table checks.
    patience, tolerance: stop after `patience` consecutive checks whose loss is
      not below best * (1 - tolerance).
    seed: int seed or a jax.random key (init, batches and Gumbel noise).
    item_weights: None, or [V+1] item weights (row 0 ignored; e.g.
      `code_refinement.popularity_weights`): batches draw items in proportion to them and the
      checks (history, report mse) are the weighted mean (1/sum w) sum_v w_v ||e_v - X_v||^2.
    check_items: 0 (every check scans the whole table) or the size of a fixed, seeded
      sample of items the checks (history, early stopping) scan instead; the codes of the
      best check's parameters are then computed once over the whole table at the end, and
      the report's mse is theirs. On a large catalog each check otherwise costs as much
      as V / batch_size training steps.
    on_check: called as on_check(step, loss) after every check (progress reporting).

  Returns:
    CodeResult of the best check.
  """
  x = np.asarray(table, np.float32)[1:]
  num_items, features = x.shape
  if num_items < 1:
    raise ValueError("the table has no item rows (row 0 is padding)")
  if min(max_steps, eval_every, patience) < 1:
    raise ValueError("max_steps, eval_every and patience must be >= 1")
  if check_items < 0:
    raise ValueError(f"check_items must be >= 0 (0 = the whole table), got {check_items}")
  w = check_item_weights(item_weights, num_items)  # before anything compiles
  static = {
      "num_codebooks": num_codebooks,
      "codebook_size": codebook_size,
      "temperature": float(temperature),
  }
  key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
  init_key, train_key = jax.random.split(key)
  params = _init_params(init_key, features=features, **static)
  opt_state = optax.adam(learning_rate).init(params)
  probs = None if w is None else jnp.asarray(w / w.sum(), jnp.float32)
  total_weight = num_items if w is None else float(w.sum())
  # One copy of the table on the device, in the chunks the checks scan (memory O(V * d) plus
  # O(_EVAL_CHUNK * M * K) per check, never [V, M, K]); the batches are drawn from it too.
  chunks, weights = (jnp.asarray(a) for a in _chunked(x, min(_EVAL_CHUNK, num_items), w))
  sampled_checks = 0 < check_items < num_items
  if sampled_checks:
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    sample = np.sort(rng.choice(num_items, check_items, replace=False))
    ws = None if w is None else w[sample]
    check_chunks, check_weights = (
        jnp.asarray(a) for a in _chunked(x[sample], min(_EVAL_CHUNK, check_items), ws)
    )
    check_weight = check_items if ws is None else float(ws.sum())
  else:
    check_chunks, check_weights, check_weight = chunks, weights, total_weight

  best = (math.inf, None, None, 0)  # loss, codes (or params), codebooks, step
  history: list[float] = []
  step, bad = 0, 0
  while step < max_steps and bad < patience:
    num_steps = min(eval_every, max_steps - step)
    params, opt_state, _ = _train_steps(
        params,
        opt_state,
        chunks,
        train_key,
        jnp.int32(step),
        jnp.int32(num_steps),
        probs,
        num_items=num_items,
        learning_rate=float(learning_rate),
        batch_size=min(batch_size, num_items),
        **static,
    )
    step += num_steps
    total, codes = _check(params, check_chunks, check_weights, **static)
    loss = float(total) / check_weight
    if not math.isfinite(loss):
      raise FloatingPointError(f"code learning: reconstruction loss is {loss} at step {step}")
    history.append(loss)
    if on_check is not None:
      on_check(step, loss)
    if best[1] is None or loss < best[0] * (1.0 - tolerance):
      # Host copies: the next step donates (overwrites) the device buffers.
      kept = jax.tree.map(np.asarray, params) if sampled_checks else np.asarray(codes)
      best = (loss, kept, np.asarray(params["codebooks"]), step)
      bad = 0
    else:
      bad += 1

  loss, codes, codebooks, best_step = best
  if sampled_checks:  # the best parameters' codes over the whole table, and their mse
    total, codes = _check(codes, chunks, weights, **static)
    codes, loss = np.asarray(codes), float(total) / total_weight
  out = np.zeros((num_items + 1, num_codebooks), code_dtype(codebook_size))
  out[1:] = codes[:num_items]
  mean = x.mean(0, dtype=np.float64).astype(np.float32)
  variance = (
      sum(
          float(np.sum(np.square(x[i : i + _EVAL_CHUNK] - mean), dtype=np.float64))
          for i in range(0, num_items, _EVAL_CHUNK)
      )
      / num_items
  )
  report = code_report(out, codebook_size)
  report.update(
      mse=loss,
      weighted=w is not None,
      table_variance=variance,
      relative_mse=loss / variance if variance > 0 else math.inf,
      steps=step,
      best_step=best_step,
      stopped_early=bad >= patience,
  )
  return CodeResult(out, np.asarray(codebooks, np.float32), history, report)
