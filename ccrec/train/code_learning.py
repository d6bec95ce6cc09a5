"""Learning compositional codes on a trained item table (METHOD.md §3, stage 'codes').

`learn_codes` trains a `CodeLearner` (Gumbel-softmax autoencoder) with Adam on
random item batches, checks the full-table reconstruction loss of the
noise-free argmax codes every `eval_every` steps, stops when it has not
improved by a relative `tolerance` for `patience` checks (or at `max_steps`),
and returns the codes and codebooks of the best check.

Every step can weight the items (`item_weights`, e.g. `popularity_weights`):
the objective is then (1/V) sum_v w_v ||e_v - X_v||^2 with weights of mean 1,
so the codes spend their few codewords where the weights are high.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ccrec.models.code_learner import CodeLearner
from ccrec.models.codes import code_dtype
from ccrec.ops import losses

_EVAL_CHUNK = 16384  # items per chunk of the full-table check (memory O(chunk * M * K))


def popularity_weights(item_counts: np.ndarray, power: float) -> np.ndarray | None:
  """Item weights max(count_v, 1)^power, normalised to mean 1 over the items 1..V.

  Args:
    item_counts: [V+1] training frequencies (row 0, padding, is left out).
    power: 0 gives None (every item counts the same); 1 weights each item by how
      often it is a training target, so frequent items are reconstructed best.

  Returns:
    float64 [V+1] weights with row 0 = 0, or None when power == 0.
  """
  if power < 0 or not math.isfinite(power):
    raise ValueError(f"popularity weight power must be a finite number >= 0, got {power}")
  if power == 0:
    return None
  counts = np.asarray(item_counts, np.float64)[1:]
  w = np.maximum(counts, 1.0) ** power
  out = np.zeros(len(counts) + 1)
  out[1:] = w / w.mean()
  return out


def _item_weights(item_weights: np.ndarray | None, num_items: int) -> np.ndarray | None:
  """Checks [V+1] item weights and returns those of the items 1..V ([V] float64) or None."""
  if item_weights is None:
    return None
  w = np.asarray(item_weights, np.float64)
  if w.shape != (num_items + 1,):
    raise ValueError(f"item_weights must be [V+1] = [{num_items + 1}] (row 0 padding), "
                     f"got shape {list(w.shape)}")
  w = w[1:]
  if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
    raise ValueError("item_weights must be finite and >= 0 with a positive sum over items 1..V")
  return w


@dataclasses.dataclass
class CodeResult:
  """Output of `learn_codes`.

  codes: [V+1, M] uint8/uint16, row 0 (padding) = 0.
  codebooks: float32 [M, K, d], to initialise the student's codebooks.
  history: full-table reconstruction loss (1/V) sum_v ||e_v - X_v||^2 of the
    argmax codes, one value per check (every `eval_every` steps).
  report: `code_report` of the codes plus mse (best check, the returned
    codes'), relative_mse (mse / table_variance), table_variance
    ((1/V) sum_v ||X_v - mean||^2), steps, best_step, stopped_early.
  """

  codes: np.ndarray
  codebooks: np.ndarray
  history: list[float]
  report: dict[str, Any]


def code_report(codes: np.ndarray, codebook_size: int, *,
                skip_padding_row: bool = True) -> dict[str, Any]:
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


def _model(x: jax.Array, num_codebooks: int, codebook_size: int,
           temperature: float) -> CodeLearner:
  return CodeLearner(num_codebooks, codebook_size, x.shape[-1], temperature)


@functools.partial(jax.jit, static_argnames=_STATIC + ("features",))
def _init_params(key, *, features: int, num_codebooks: int, codebook_size: int,
                 temperature: float):
  model = CodeLearner(num_codebooks, codebook_size, features, temperature)
  return model.init(key, jnp.zeros((1, features)))["params"]


@functools.partial(jax.jit, static_argnames=_STATIC + ("learning_rate", "batch_size"),
                   donate_argnames=("params", "opt_state"))
def _train_steps(params, opt_state, x, key, start, num_steps, probs=None, *,
                 num_codebooks: int, codebook_size: int, temperature: float,
                 learning_rate: float, batch_size: int):
  """`num_steps` (traced) Adam steps on random batches of x [V, d]; step s uses fold_in(key, s).

  probs: None (uniform batches) or [V] sampling probabilities (item weights / their sum), so
  the expected batch loss is the weighted reconstruction loss.
  """
  model = _model(x, num_codebooks, codebook_size, temperature)
  optimizer = optax.adam(learning_rate)

  def loss_fn(p, xb, gumbel_key):
    recon = model.apply({"params": p}, xb, train=True, rngs={"gumbel": gumbel_key})
    return losses.reconstruction_mse(recon, xb)

  def body(i, carry):
    p, state, total = carry
    batch_key, gumbel_key = jax.random.split(jax.random.fold_in(key, start + i))
    if probs is None:
      idx = jax.random.randint(batch_key, (batch_size,), 0, x.shape[0])
    else:
      idx = jax.random.choice(batch_key, x.shape[0], (batch_size,), p=probs)
    loss, grads = jax.value_and_grad(loss_fn)(p, jnp.take(x, idx, axis=0), gumbel_key)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state, total + loss

  params, opt_state, total = jax.lax.fori_loop(
      0, num_steps, body, (params, opt_state, jnp.zeros((), jnp.float32)))
  return params, opt_state, total / jnp.maximum(num_steps, 1)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _check(params, chunks, weights, *, num_codebooks: int, codebook_size: int,
           temperature: float):
  """chunks [C, S, d], weights [C, S] -> (sum of squared errors of the argmax codes, codes [C*S, M])."""
  model = _model(chunks, num_codebooks, codebook_size, temperature)

  def one(args):
    xc, wc = args
    recon = model.apply({"params": params}, xc, train=False)
    codes = model.apply({"params": params}, xc, method="codes")
    return losses.reconstruction_mse_sums(recon, xc, wc)[0], codes

  sums, codes = jax.lax.map(one, (chunks, weights))
  return jnp.sum(sums), codes.reshape(-1, num_codebooks)


def _chunked(x: np.ndarray, chunk: int, w: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """[V, d] -> ([C, chunk, d] zero-padded, weights [C, chunk]: w (default 1), 0 for filler)."""
  num = x.shape[0]
  num_chunks = -(-num // chunk)
  padded = np.zeros((num_chunks * chunk, x.shape[1]), np.float32)
  padded[:num] = x
  weights = np.zeros(num_chunks * chunk, np.float32)
  weights[:num] = 1.0 if w is None else w
  return padded.reshape(num_chunks, chunk, -1), weights.reshape(num_chunks, chunk)


def learn_codes(table: np.ndarray, *, num_codebooks: int, codebook_size: int,
                temperature: float = 0.3, learning_rate: float = 1e-3, batch_size: int = 256,
                max_steps: int = 20000, eval_every: int = 200, patience: int = 10,
                tolerance: float = 1e-3, seed: int | jax.Array = 0,
                item_weights: np.ndarray | None = None) -> CodeResult:
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
      `popularity_weights`): batches draw items in proportion to them and the
      checks (history, report mse) are the weighted mean (1/sum w) sum_v w_v ||e_v - X_v||^2.

  Returns:
    CodeResult of the best check.
  """
  x = np.asarray(table, np.float32)[1:]
  num_items, features = x.shape
  if num_items < 1:
    raise ValueError("the table has no item rows (row 0 is padding)")
  if min(max_steps, eval_every, patience) < 1:
    raise ValueError("max_steps, eval_every and patience must be >= 1")
  static = {"num_codebooks": num_codebooks, "codebook_size": codebook_size,
            "temperature": float(temperature)}
  key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
  init_key, train_key = jax.random.split(key)
  params = _init_params(init_key, features=features, **static)
  opt_state = optax.adam(learning_rate).init(params)
  w = _item_weights(item_weights, num_items)
  probs = None if w is None else jnp.asarray(w / w.sum(), jnp.float32)
  total_weight = num_items if w is None else float(w.sum())
  x_device = jnp.asarray(x)
  chunks, weights = _chunked(x, min(_EVAL_CHUNK, num_items), w)

  best = (math.inf, None, None, 0)        # loss, codes, codebooks, step
  history: list[float] = []
  step, bad = 0, 0
  while step < max_steps and bad < patience:
    num_steps = min(eval_every, max_steps - step)
    params, opt_state, _ = _train_steps(
        params, opt_state, x_device, train_key, jnp.int32(step), jnp.int32(num_steps), probs,
        learning_rate=float(learning_rate), batch_size=min(batch_size, num_items), **static)
    step += num_steps
    total, codes = _check(params, chunks, weights, **static)
    loss = float(total) / total_weight
    if not math.isfinite(loss):
      raise FloatingPointError(f"code learning: reconstruction loss is {loss} at step {step}")
    history.append(loss)
    if best[1] is None or loss < best[0] * (1.0 - tolerance):
      # Host copies: the next step donates (overwrites) the device buffers.
      best = (loss, np.asarray(codes), np.asarray(params["codebooks"]), step)
      bad = 0
    else:
      bad += 1

  loss, codes, codebooks, best_step = best
  out = np.zeros((num_items + 1, num_codebooks), code_dtype(codebook_size))
  out[1:] = codes[:num_items]
  variance = float(np.mean(np.sum(np.square(x - x.mean(0)), axis=1)))
  report = code_report(out, codebook_size)
  report.update(mse=loss, weighted=w is not None, table_variance=variance,
                relative_mse=loss / variance if variance > 0 else math.inf,
                steps=step, best_step=best_step, stopped_early=bad >= patience)
  return CodeResult(out, np.asarray(codebooks, np.float32), history, report)


def reconstruct(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
  """The item table the codes stand for: row v = sum_m codebooks[m, codes[v, m]]; row 0 zero.

  codes [V+1, M] integers, codebooks [M, K, d] -> float32 [V+1, d].
  """
  c = np.asarray(codes).astype(np.int64)[1:]
  books = np.asarray(codebooks, np.float32)
  out = np.zeros((len(c) + 1, books.shape[-1]), np.float32)
  out[1:] = sum(books[j][c[:, j]] for j in range(c.shape[1]))
  return out


def refit_codebooks(table: np.ndarray, codes: np.ndarray, codebook_size: int,
                    ridge: float = 1e-6, item_weights: np.ndarray | None = None
                    ) -> tuple[np.ndarray, float]:
  """Least-squares codebooks for frozen codes: argmin_C sum_v w_v ||sum_m C_m[c_v^m] - X_v||^2.

  With the codes fixed the reconstruction is linear in the codebooks, so the
  optimum is one ridge-regularised normal-equation solve of size M*K (exact,
  unlike the Gumbel autoencoder's codebooks, which it never makes worse).

  Args:
    table: [V+1, d] item table (row 0, padding, is left out).
    codes: [V+1, M] integer codes.
    codebook_size: K.
    ridge: Tikhonov weight (keeps unused codewords at zero).
    item_weights: None (every item 1) or [V+1] item weights (row 0 ignored).

  Returns:
    (codebooks float32 [M, K, d], reconstruction mse (1/sum w) sum_v w_v ||e_v - X_v||^2,
    the plain mean over items without weights).
  """
  x = np.asarray(table, np.float64)[1:]
  c = np.asarray(codes, np.int64)[1:]
  v, m = c.shape
  w = _item_weights(item_weights, v)
  w = np.ones(v) if w is None else w
  k = codebook_size
  flat = c + np.arange(m)[None, :] * k  # [V, M] column index into the M*K unknowns
  gram = np.zeros((m * k, m * k))
  np.add.at(gram, (np.repeat(flat, m, axis=1).ravel(), np.tile(flat, (1, m)).ravel()),
            np.repeat(w, m * m))
  rhs = np.zeros((m * k, x.shape[1]))
  for j in range(m):
    np.add.at(rhs, flat[:, j], x * w[:, None])
  solution = np.linalg.solve(gram + ridge * np.eye(m * k), rhs)
  recon = solution[flat].sum(axis=1)
  mse = float(np.sum(w * np.sum(np.square(recon - x), axis=1)) / w.sum())
  return solution.reshape(m, k, -1).astype(np.float32), mse


def refine_codes(table: np.ndarray, codes: np.ndarray, codebook_size: int, *,
                 iterations: int = 10, ridge: float = 1e-6,
                 item_weights: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[float]]:
  """Alternating refinement of learned codes (additive quantisation), never worse.

  Each iteration (1) refits the codebooks by least squares for the current
  codes (`refit_codebooks`), then (2) re-assigns each codebook's codeword of
  every item to the one that best reconstructs the item given its other
  codewords (exact coordinate descent). Both steps can only lower
  sum_v w_v ||e_v - X_v||^2 (w_v = `item_weights`, default 1; an item's own
  weight does not change its best codeword, only the codebooks it is fitted to). The Gumbel-softmax autoencoder's codes are the
  starting point; this removes the local minima (collapsed codewords, items
  sharing a full code) it stalls in at low temperature.

  Returns:
    (codes [V+1, M] of the input dtype with row 0 = 0, codebooks float32 [M, K, d],
    (weighted) mse after each iteration).
  """
  x = np.asarray(table, np.float32)[1:]
  current = np.asarray(codes)[1:].astype(np.int64)
  m = current.shape[1]
  dtype = np.asarray(codes).dtype

  def with_padding(rows: np.ndarray) -> np.ndarray:  # [V, M] -> [V+1, M], row 0 = 0
    full = np.zeros((len(rows) + 1, m), dtype)
    full[1:] = rows
    return full

  history = []
  books, _ = refit_codebooks(table, codes, codebook_size, ridge, item_weights)
  for _ in range(iterations):
    recon = sum(books[j][current[:, j]] for j in range(m))
    for j in range(m):
      residual = x - (recon - books[j][current[:, j]])  # what codebook j must explain [V, d]
      # argmin_k ||residual - C_j[k]||^2 = argmax_k 2 <residual, C_j[k]> - ||C_j[k]||^2
      best = np.argmax(2.0 * residual @ books[j].T - np.sum(books[j] ** 2, axis=1), axis=1)
      recon = recon - books[j][current[:, j]] + books[j][best]
      current[:, j] = best
    books, mse = refit_codebooks(table, with_padding(current), codebook_size, ridge,
                                 item_weights)
    history.append(mse)
    if len(history) > 1 and history[-2] - mse <= 1e-7 * max(history[-2], 1e-12):
      break
  return with_padding(current), books, history


def deduplicate_codes(table: np.ndarray, codes: np.ndarray, codebooks: np.ndarray,
                      item_weights: np.ndarray | None = None) -> tuple[np.ndarray, int]:
  """Gives every item its own full code, at the least reconstruction cost.

  Items that share a full code get identical composite embeddings, so the
  compressed student cannot tell them apart (and under ccrec's tie rule the
  target ranks behind every item it shares a code with). For each group of
  items sharing a code, the item reconstructed best keeps it; each of the
  others moves to the free code nearest its teacher row among the codes that
  differ in one codebook (M * K candidates), then in two (M(M-1)/2 * K^2),
  taken in order of reconstruction error. With `item_weights` ([V+1]) the
  heaviest item of a group keeps the code (ties: the best reconstructed).
  Codebooks are left unchanged (refit afterwards if wanted).

  Returns:
    (codes [V+1, M] of the input dtype, number of items still sharing a code:
    0 unless V is close to K^M).
  """
  x = np.asarray(table, np.float32)[1:]
  books = np.asarray(codebooks, np.float32)
  out = np.asarray(codes).copy()
  current = out[1:].astype(np.int64)
  m, k = books.shape[0], books.shape[1]
  recon = sum(books[j][current[:, j]] for j in range(m))
  error = np.sum(np.square(recon - x), axis=1)
  used: dict[tuple, int] = {}
  movers = []
  w = _item_weights(item_weights, len(x))
  order = (np.argsort(error, kind="stable") if w is None
           else np.lexsort((error, -w)))  # heaviest, then best reconstructed, keep their code
  for item in order:
    key = tuple(current[item])
    if key in used:
      movers.append(item)
    else:
      used[key] = item
  left = 0
  for item in movers:
    code = current[item]
    residual = x[item] - recon[item]  # target minus reconstruction with the current code
    # delta[j, c] = change of the squared error when codeword j is set to c alone
    delta = np.stack([
        np.sum(np.square(residual[None] - (books[j] - books[j][code[j]])), axis=1)
        for j in range(m)])                                        # [M, K]
    candidates = [(delta[j, c], ((j, c),)) for j in range(m) for c in range(k) if c != code[j]]
    candidates.sort(key=lambda t: t[0])
    chosen = _first_free(code, candidates, used)
    if chosen is None and m > 1:
      pairs = []
      for a in range(m):
        for b in range(a + 1, m):
          diff = (books[a] - books[a][code[a]])[:, None, :] + (books[b] - books[b][code[b]])[None]
          cost = np.sum(np.square(residual[None, None] - diff), axis=2)  # [K, K]
          for ca, cb in zip(*np.unravel_index(np.argsort(cost, axis=None), cost.shape)):
            if ca != code[a] and cb != code[b]:
              pairs.append((cost[ca, cb], ((a, int(ca)), (b, int(cb)))))
      pairs.sort(key=lambda t: t[0])
      chosen = _first_free(code, pairs, used)
    if chosen is None:
      left += 1
      continue
    current[item] = chosen
    used[tuple(chosen)] = item
  out[1:] = current.astype(out.dtype)
  return out, left


def _first_free(code: np.ndarray, candidates, used: dict) -> np.ndarray | None:
  for _, changes in candidates:
    new = code.copy()
    for j, c in changes:
      new[j] = c
    if tuple(new) not in used:
      return new
  return None
