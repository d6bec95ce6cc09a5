"""Dense references of ccrec.train.code_refinement: its code before it was chunked.

Each function builds its full [V, ...] temporaries in one go (the straightforward
formulas); tests/test_code_refinement.py checks the chunked code against them.

Original summary: exact least-squares steps on frozen codes (docs/method.md §3.1).

With the codes fixed, the reconstruction sum_m C_m[c_v^m] is linear in the
codebooks, so the best codebooks are one normal-equation solve
(`refit_codebooks`); alternating it with exact per-codebook re-assignment
refines the codes (`refine_codes`, additive quantisation); `deduplicate_codes`
gives every item its own full code. Every step can weight the items
(`popularity_weights`): the objective is then sum_v w_v ||e_v - X_v||^2.
Numpy only: these run once, on the host, on a [V, d] table.
"""

from __future__ import annotations

import math

import numpy as np


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


def check_item_weights(item_weights: np.ndarray | None, num_items: int) -> np.ndarray | None:
  """Checks [V+1] item weights and returns those of the items 1..V ([V] float64) or None."""
  if item_weights is None:
    return None
  w = np.asarray(item_weights, np.float64)
  if w.shape != (num_items + 1,):
    raise ValueError(
        f"item_weights must be [V+1] = [{num_items + 1}] (row 0 padding), "
        f"got shape {list(w.shape)}"
    )
  w = w[1:]
  if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
    raise ValueError("item_weights must be finite and >= 0 with a positive sum over items 1..V")
  return w


def reconstruct(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
  """The item table the codes stand for: row v = sum_m codebooks[m, codes[v, m]]; row 0 zero.

  codes [V+1, M] integers, codebooks [M, K, d] -> float32 [V+1, d].
  """
  c = np.asarray(codes).astype(np.int64)[1:]
  books = np.asarray(codebooks, np.float32)
  out = np.zeros((len(c) + 1, books.shape[-1]), np.float32)
  out[1:] = sum(books[j][c[:, j]] for j in range(c.shape[1]))
  return out


def refit_codebooks(
    table: np.ndarray,
    codes: np.ndarray,
    codebook_size: int,
    ridge: float = 1e-6,
    item_weights: np.ndarray | None = None,
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
  w = check_item_weights(item_weights, v)
  w = np.ones(v) if w is None else w
  k = codebook_size
  flat = c + np.arange(m)[None, :] * k  # [V, M] column index into the M*K unknowns
  gram = np.zeros((m * k, m * k))
  np.add.at(
      gram, (np.repeat(flat, m, axis=1).ravel(), np.tile(flat, (1, m)).ravel()), np.repeat(w, m * m)
  )
  rhs = np.zeros((m * k, x.shape[1]))
  for j in range(m):
    np.add.at(rhs, flat[:, j], x * w[:, None])
  solution = np.linalg.solve(gram + ridge * np.eye(m * k), rhs)
  recon = solution[flat].sum(axis=1)
  mse = float(np.sum(w * np.sum(np.square(recon - x), axis=1)) / w.sum())
  return solution.reshape(m, k, -1).astype(np.float32), mse


def refine_codes(
    table: np.ndarray,
    codes: np.ndarray,
    codebook_size: int,
    *,
    iterations: int = 10,
    ridge: float = 1e-6,
    item_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
  """Alternating refinement of learned codes (additive quantisation), never worse.

  Each iteration (1) refits the codebooks by least squares for the current
  codes (`refit_codebooks`), then (2) re-assigns each codebook's codeword of
  every item to the one that best reconstructs the item given its other
  codewords (exact coordinate descent). Both steps can only lower
  sum_v w_v ||e_v - X_v||^2 (w_v = `item_weights`, default 1; an item's own
  weight does not change its best codeword, only the codebooks it is fitted
  to). The Gumbel-softmax autoencoder's codes are the starting point; this
  removes the local minima (collapsed codewords, items sharing a full code) it
  stalls in at low temperature.

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
    books, mse = refit_codebooks(table, with_padding(current), codebook_size, ridge, item_weights)
    history.append(mse)
    if len(history) > 1 and history[-2] - mse <= 1e-7 * max(history[-2], 1e-12):
      break
  return with_padding(current), books, history


def deduplicate_codes(
    table: np.ndarray,
    codes: np.ndarray,
    codebooks: np.ndarray,
    item_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
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
  w = check_item_weights(item_weights, len(x))
  order = (
      np.argsort(error, kind="stable") if w is None else np.lexsort((error, -w))
  )  # heaviest, then best reconstructed, keep their code
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
    delta = np.stack(
        [
            np.sum(np.square(residual[None] - (books[j] - books[j][code[j]])), axis=1)
            for j in range(m)
        ]
    )  # [M, K]
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
