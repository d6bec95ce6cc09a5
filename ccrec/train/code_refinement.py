"""Exact least-squares steps on frozen codes (docs/method.md §3.1, stage 'codes', after learning).

With the codes fixed, the reconstruction sum_m C_m[c_v^m] is linear in the
codebooks, so the best codebooks are one normal-equation solve
(`refit_codebooks`); alternating it with exact per-codebook re-assignment
refines the codes (`refine_codes`, additive quantisation); `deduplicate_codes`
gives every item its own full code. Every step can weight the items
(`popularity_weights`): the objective is then sum_v w_v ||e_v - X_v||^2.
Numpy only: these run once, on the host, on a [V, d] table, `chunk` items at a time:
no temporary grows as V x K, V x M x d or V x V (memory O(V * M) besides the inputs).
"""

from __future__ import annotations

import math

import numpy as np

# Items per step of the chunked passes over the table: each step holds O(ITEM_CHUNK * (K + d))
# floats, whatever V (16,384 items x (256 + 256) x 4 bytes = 32 MiB at K = d = 256).
ITEM_CHUNK = 16_384


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


def _item_chunks(num: int, chunk: int):
  """Slices of `chunk` items (the last one shorter) covering 0..num."""
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  for start in range(0, num, chunk):
    yield slice(start, min(start + chunk, num))


def _sum_codewords(books: np.ndarray, codes: np.ndarray) -> np.ndarray:
  """sum_m books[m, codes[:, m]] for a chunk of items: [S, M] -> [S, d] in books' dtype."""
  out = books[0][codes[:, 0]]  # a fresh array (fancy indexing copies)
  for j in range(1, codes.shape[1]):
    out += books[j][codes[:, j]]
  return out


def reconstruct(codes: np.ndarray, codebooks: np.ndarray, *, chunk: int = ITEM_CHUNK) -> np.ndarray:
  """The item table the codes stand for: row v = sum_m codebooks[m, codes[v, m]]; row 0 zero.

  codes [V+1, M] integers, codebooks [M, K, d] -> float32 [V+1, d], written `chunk` items at
  a time (no temporary beyond the output and one chunk).
  """
  c = np.asarray(codes)[1:]
  books = np.asarray(codebooks, np.float32)
  out = np.zeros((len(c) + 1, books.shape[-1]), np.float32)
  for s in _item_chunks(len(c), chunk):
    out[1:][s] = _sum_codewords(books, c[s].astype(np.int64))
  return out


def normal_equations(
    table: np.ndarray,
    codes: np.ndarray,
    codebook_size: int,
    item_weights: np.ndarray | None = None,
    *,
    chunk: int = ITEM_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
  """The normal equations of the codebook least squares, accumulated without a [V, M*K] design.

  The design matrix A [V, M*K] has one 1 per item and codebook (column m*K + c_v^m), so
  A^T W A is block m, m' = the weighted count of items with codewords (c, c') (a bincount
  of the code pairs; diagonal blocks are diagonal) and A^T W X stacks, per codebook, the
  weighted sums of the rows that use each codeword (bincounts over `chunk` items at a time).

  Args:
    table: [V+1, d] item table (row 0, padding, is left out); read `chunk` rows at a time.
    codes: [V+1, M] integer codes.
    codebook_size: K.
    item_weights: None (every item 1) or [V+1] item weights (row 0 ignored).
    chunk: items per step of the right-hand side (memory O(chunk * d)).

  Returns:
    (gram float64 [M*K, M*K] = A^T W A, rhs float64 [M*K, d] = A^T W X).
  """
  x = np.asarray(table)[1:]
  c = np.asarray(codes)[1:].astype(np.int64)
  v, m = c.shape
  k, d = codebook_size, x.shape[1]
  w = check_item_weights(item_weights, v)
  w = np.ones(v) if w is None else w
  gram = np.zeros((m * k, m * k))
  diagonal = np.arange(k)
  for a in range(m):
    gram[a * k + diagonal, a * k + diagonal] = np.bincount(c[:, a], weights=w, minlength=k)
    for b in range(a + 1, m):
      block = np.bincount(c[:, a] * k + c[:, b], weights=w, minlength=k * k).reshape(k, k)
      gram[a * k : (a + 1) * k, b * k : (b + 1) * k] = block
      gram[b * k : (b + 1) * k, a * k : (a + 1) * k] = block.T
  rhs = np.zeros((m, k * d))
  columns = np.arange(d)
  for s in _item_chunks(v, chunk):
    weighted = (x[s].astype(np.float64) * w[s, None]).ravel()
    for j in range(m):
      rhs[j] += np.bincount(
          (c[s, j, None] * d + columns).ravel(), weights=weighted, minlength=k * d
      )
  return gram, rhs.reshape(m * k, d)


def weighted_mse(
    table: np.ndarray,
    codes: np.ndarray,
    codebooks: np.ndarray,
    item_weights: np.ndarray | None = None,
    *,
    chunk: int = ITEM_CHUNK,
) -> float:
  """(1/sum w) sum_v w_v ||sum_m C_m[c_v^m] - X_v||^2 over the items 1..V, `chunk` at a time.

  The arithmetic is in the codebooks' dtype (float64 codebooks: float64 throughout).
  """
  x = np.asarray(table)[1:]
  c = np.asarray(codes)[1:]
  books = np.asarray(codebooks)
  dtype = np.float64 if books.dtype == np.float64 else np.float32
  books = books.astype(dtype, copy=False)
  w = check_item_weights(item_weights, len(c))
  total = 0.0
  for s in _item_chunks(len(c), chunk):
    err = np.sum(
        np.square(_sum_codewords(books, c[s].astype(np.int64)) - x[s].astype(dtype)),
        axis=1,
        dtype=np.float64,
    )
    total += float(np.sum(err if w is None else w[s] * err))
  return total / (len(c) if w is None else float(w.sum()))


def refit_codebooks(
    table: np.ndarray,
    codes: np.ndarray,
    codebook_size: int,
    ridge: float = 1e-6,
    item_weights: np.ndarray | None = None,
    *,
    chunk: int = ITEM_CHUNK,
) -> tuple[np.ndarray, float]:
  """Least-squares codebooks for frozen codes: argmin_C sum_v w_v ||sum_m C_m[c_v^m] - X_v||^2.

  With the codes fixed the reconstruction is linear in the codebooks, so the
  optimum is one ridge-regularised normal-equation solve of size M*K (exact,
  unlike the Gumbel autoencoder's codebooks, which it never makes worse). The
  equations are accumulated `chunk` items at a time (`normal_equations`): memory
  O((M*K)^2 + M*K*d + chunk*d) besides the inputs, whatever V.

  Args:
    table: [V+1, d] item table (row 0, padding, is left out).
    codes: [V+1, M] integer codes.
    codebook_size: K.
    ridge: Tikhonov weight (keeps unused codewords at zero).
    item_weights: None (every item 1) or [V+1] item weights (row 0 ignored).
    chunk: items per step.

  Returns:
    (codebooks float32 [M, K, d], reconstruction mse (1/sum w) sum_v w_v ||e_v - X_v||^2,
    the plain mean over items without weights, computed with the float64 solution).
  """
  m = np.asarray(codes).shape[1]
  gram, rhs = normal_equations(table, codes, codebook_size, item_weights, chunk=chunk)
  solution = np.linalg.solve(gram + ridge * np.eye(len(gram)), rhs).reshape(m, codebook_size, -1)
  mse = weighted_mse(table, codes, solution, item_weights, chunk=chunk)
  return solution.astype(np.float32), mse


def refine_codes(
    table: np.ndarray,
    codes: np.ndarray,
    codebook_size: int,
    *,
    iterations: int = 10,
    ridge: float = 1e-6,
    item_weights: np.ndarray | None = None,
    chunk: int = ITEM_CHUNK,
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
  stalls in at low temperature. Step (2) treats every item on its own, so it
  runs `chunk` items at a time (memory O(chunk * (K + d))).

  Returns:
    (codes [V+1, M] of the input dtype with row 0 = 0, codebooks float32 [M, K, d],
    (weighted) mse after each iteration).
  """
  x = np.asarray(table)[1:]
  dtype = np.asarray(codes).dtype
  current = np.zeros(np.asarray(codes).shape, dtype)  # [V+1, M], row 0 = 0
  current[1:] = np.asarray(codes)[1:]
  m = current.shape[1]
  history = []
  books, _ = refit_codebooks(table, current, codebook_size, ridge, item_weights, chunk=chunk)
  for _ in range(iterations):
    norms = [np.sum(books[j] ** 2, axis=1) for j in range(m)]
    for s in _item_chunks(len(x), chunk):
      xs = x[s].astype(np.float32, copy=False)
      cs = current[1:][s].astype(np.int64)
      recon = _sum_codewords(books, cs)
      for j in range(m):
        residual = xs - (recon - books[j][cs[:, j]])  # what codebook j must explain [S, d]
        # argmin_k ||residual - C_j[k]||^2 = argmax_k 2 <residual, C_j[k]> - ||C_j[k]||^2
        best = np.argmax(2.0 * residual @ books[j].T - norms[j], axis=1)
        recon = recon - books[j][cs[:, j]] + books[j][best]
        cs[:, j] = best
      current[1:][s] = cs.astype(dtype)
    books, mse = refit_codebooks(table, current, codebook_size, ridge, item_weights, chunk=chunk)
    history.append(mse)
    if len(history) > 1 and history[-2] - mse <= 1e-7 * max(history[-2], 1e-12):
      break
  return current, books, history


def _row_keys(rows: np.ndarray) -> np.ndarray:
  """[N, M] int64 codes -> [N] opaque keys (the rows' bytes), equal iff the rows are equal."""
  rows = np.ascontiguousarray(rows, np.int64)
  return rows.view(np.dtype((np.void, 8 * rows.shape[1]))).ravel()


def deduplicate_codes(
    table: np.ndarray,
    codes: np.ndarray,
    codebooks: np.ndarray,
    item_weights: np.ndarray | None = None,
    *,
    chunk: int = ITEM_CHUNK,
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

  The groups come from one sort of the codes (no pairwise comparison); the codes
  taken are a sorted array (those kept) plus a set (those given to moved items),
  so memory is O(V * M) besides the inputs and the search is per moved item: its
  distances come from the codebooks' Gram matrices (float64; the order of the
  candidates is the exact one up to float rounding), the candidates are checked
  cheapest first in blocks.

  Returns:
    (codes [V+1, M] of the input dtype, number of items still sharing a code:
    0 unless V is close to K^M).
  """
  x = np.asarray(table)[1:]
  books = np.asarray(codebooks, np.float32)
  out = np.asarray(codes).copy()
  current = out[1:].astype(np.int64)
  m, k = books.shape[0], books.shape[1]
  error = np.zeros(len(x), np.float32)
  for s in _item_chunks(len(x), chunk):
    recon = _sum_codewords(books, current[s])
    error[s] = np.sum(np.square(recon - x[s].astype(np.float32, copy=False)), axis=1)
  w = check_item_weights(item_weights, len(x))
  order = (
      np.argsort(error, kind="stable") if w is None else np.lexsort((error, -w))
  )  # heaviest, then best reconstructed, keep their code
  # The first item of each code in `order` keeps it; the others move, in `order`.
  kept, first = np.unique(_row_keys(current[order]), return_index=True)
  keeps = np.zeros(len(order), bool)
  keeps[first] = True
  movers = order[~keeps]
  taken: set[bytes] = set()  # codes given to moved items

  def first_free(code: np.ndarray, cost: np.ndarray, decode) -> np.ndarray | None:
    """The free code of least `cost` (ties: the lower index) among the candidates; decode:
    candidate indices [N] -> changes [N, P, 2] (codebook, codeword). The candidates are
    looked at in blocks of the cheapest (a partial sort), as the first few are usually free."""
    done, block = 0, 64
    while done < len(cost):
      hi = min(len(cost), done + block)
      bound = np.partition(cost, hi - 1)[hi - 1]
      idx = np.flatnonzero(cost <= bound)
      idx = idx[np.lexsort((idx, cost[idx]))][done:]  # in order; those checked left out
      changes = decode(idx)
      rows = np.repeat(code[None], len(idx), axis=0)
      for p in range(changes.shape[1]):
        rows[np.arange(len(idx)), changes[:, p, 0]] = changes[:, p, 1]
      keys = _row_keys(rows)
      at = np.minimum(np.searchsorted(kept, keys), len(kept) - 1)
      for i in np.flatnonzero(kept[at] != keys):
        if keys[i].tobytes() not in taken:
          return rows[i]
      done += len(idx)
      block *= 4
    return None

  # Squared distances by expansion in float64, from the codebooks' Gram matrices (computed
  # once): per moved item O(M^2 K^2 + M K d), never a [K, K, d] difference.
  b64 = books.astype(np.float64)
  norms = np.sum(np.square(b64), axis=2)  # [M, K]
  gram = {(a, b): b64[a] @ b64[b].T for a in range(m) for b in range(a, m)}  # [K, K] each
  singles = lambda idx: np.stack([idx // k, idx % k], axis=1)[:, None, :]
  pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]

  def pair_changes(idx: np.ndarray) -> np.ndarray:
    pair, rest = np.divmod(idx, k * k)
    ab = np.asarray(pairs)[pair]
    return np.stack(
        [np.stack([ab[:, 0], rest // k], axis=1), np.stack([ab[:, 1], rest % k], axis=1)], axis=1
    )  # [N, 2, 2]

  left = 0
  for item in movers:
    code = current[item]
    recon = _sum_codewords(books, code[None])[0]
    # target minus current reconstruction
    r = (x[item].astype(np.float32) - recon).astype(np.float64)
    r_dot = b64 @ r  # [M, K] <r, C_j[c]>
    r_own = r_dot[np.arange(m), code]  # [M]
    # <r, d_j[c]>, ||d_j[c]||^2 of the change d_j[c] = C_j[c] - C_j[code_j]
    r_d = r_dot - r_own[:, None]
    d_sq = np.stack([norms[j] - 2.0 * gram[j, j][:, code[j]] + norms[j, code[j]] for j in range(m)])
    rr = float(r @ r)
    # delta[j, c]: the squared error when codeword j is set to c alone
    delta = rr - 2.0 * r_d + d_sq  # [M, K]
    delta[np.arange(m), code] = np.inf  # not a change
    chosen = first_free(code, delta.ravel(), singles)
    if chosen is None and m > 1:
      costs = []
      for a, b in pairs:
        g = gram[a, b]  # <d_a[ca], d_b[cb]> = G - G[:, cb0] - G[ca0, :] + G[ca0, cb0]
        cross = g - g[:, code[b], None] - g[None, code[a], :] + g[code[a], code[b]]
        cost = (
            rr
            - 2.0 * (r_d[a][:, None] + r_d[b][None, :])
            + d_sq[a][:, None]
            + d_sq[b][None, :]
            + 2.0 * cross
        )
        cost[code[a], :] = np.inf
        cost[:, code[b]] = np.inf
        costs.append(cost.ravel())
      chosen = first_free(code, np.concatenate(costs), pair_changes)
    if chosen is None:
      left += 1
      continue
    current[item] = chosen
    taken.add(_row_keys(chosen[None])[0].tobytes())
  out[1:] = current.astype(out.dtype)
  return out, left
