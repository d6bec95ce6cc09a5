"""Static-shape batches for jit, and the hot/cold item split.

Every batch has the same shapes: [batch_size, max_len], **left-aligned** (the
first kept click at position 0, padding (0) at the end, mask = items > 0). A
prefix longer than `max_len` keeps its last `max_len` items. The last batch is
filled with zero-weight rows, so every example (or target) counts exactly once.
Shuffling is a permutation drawn from numpy's default_rng([seed, epoch]), so
the order depends only on (seed, epoch).

Batches are built a chunk of rows at a time with vectorised gathers; a batch
dict's arrays are views into the chunk, so copy them if you keep them.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ccrec.data.dataset import Examples, Sequences
from ccrec.data.errors import DataError

_CHUNK_CELLS = 1 << 21  # rows x max_len built per chunk (~8 MB of int32)


def _check(batch_size: int, max_len: int) -> None:
  if batch_size < 1:
    raise DataError(f"batch_size must be >= 1, got {batch_size}")
  if max_len < 1:
    raise DataError(f"max_len must be >= 1, got {max_len}")


def _order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
  if not shuffle:
    return np.arange(n, dtype=np.int64)
  return np.random.default_rng([seed, epoch]).permutation(n)


def _gather(items: np.ndarray, starts: np.ndarray, lens: np.ndarray, max_len: int) -> np.ndarray:
  """int32 [R, max_len]: row r is items[starts[r]:starts[r] + lens[r]], zero-padded right."""
  cols = np.arange(max_len, dtype=np.int64)
  mask = cols[None, :] < lens[:, None]
  if len(items) == 0:
    return np.zeros(mask.shape, dtype=np.int32)
  index = np.minimum(starts[:, None] + cols[None, :], len(items) - 1)
  return np.where(mask, items[index], 0).astype(np.int32, copy=False)


def _rows_per_chunk(batch_size: int, max_len: int) -> int:
  return batch_size * max(1, _CHUNK_CELLS // (batch_size * max_len))


def _check_bucket(length_bucket: int) -> int:
  if length_bucket < 0:
    raise DataError(f"length_bucket must be >= 0 (0 = off), got {length_bucket}")
  return int(length_bucket)


def _by_length(idx: np.ndarray, lens_all: np.ndarray, length_bucket: int) -> np.ndarray:
  """idx reordered by row length lens_all[idx] (stable: equal lengths keep their shuffled
  order) when length_bucket > 0, else unchanged."""
  return idx[np.argsort(lens_all[idx], kind="stable")] if length_bucket else idx


def _emit(
    columns: dict[str, np.ndarray],
    lens: np.ndarray,
    batch_size: int,
    length_bucket: int,
    rng: np.random.Generator | None,
) -> Iterator[dict[str, np.ndarray]]:
  """The chunk's batches (columns: 'items' [R, L] and other arrays of R rows) in order,
  or (length_bucket > 0) in `rng`'s order with the [R, L] columns cut to the batch's
  longest row rounded up to a multiple of length_bucket, at most L (lens: lengths of the
  chunk's real rows; the filler rows after them are empty). The columns cut off hold
  only padding (rows are left-aligned)."""
  padded, max_len = columns["items"].shape
  starts = np.arange(0, padded, batch_size)
  if length_bucket:
    starts = rng.permutation(starts)
    row_lens = np.zeros(padded, dtype=np.int64)
    row_lens[: len(lens)] = lens
  for b in starts:
    batch = {k: v[b : b + batch_size] for k, v in columns.items()}
    if length_bucket:
      longest = max(int(row_lens[b : b + batch_size].max()), 1)
      width = min(max_len, -(-longest // length_bucket) * length_bucket)
      batch = {k: v[:, :width] if v.ndim == 2 else v for k, v in batch.items()}
    yield batch


def num_batches(num_rows: int, batch_size: int) -> int:
  """Batches for `num_rows` rows (examples or windows): ceil(num_rows / batch_size)."""
  _check(batch_size, 1)
  return -(-int(num_rows) // batch_size)


def prefix_batches(
    examples: Examples,
    batch_size: int,
    max_len: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    length_bucket: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Batches of (prefix -> target) examples.

  Yields dicts: items int32 [B, L], target int32 [B], weight float32 [B]
  (1 for real rows, 0 for the filler rows of the last batch, whose items and
  target are 0). ceil(N / B) batches; each example appears exactly once.
  L = max_len, or with length_bucket > 0 the batch's longest prefix rounded up
  to a multiple of length_bucket: rows of similar length are batched together
  (sorted by length within each shuffled chunk of rows, batches in a seeded
  order), so short sessions do not pay for max_len positions.
  """
  _check(batch_size, max_len)
  length_bucket = _check_bucket(length_bucket)
  lens_all = np.minimum(examples.prefixes.lengths(), max_len)
  n = len(examples)
  order = _order(n, shuffle, seed, epoch)
  chunk = _rows_per_chunk(batch_size, max_len)
  rng = np.random.default_rng([seed, epoch, 1]) if length_bucket else None
  for lo in range(0, n, chunk):
    idx = _by_length(order[lo : lo + chunk], lens_all, length_bucket)
    rows = len(idx)
    padded = -(-rows // batch_size) * batch_size
    lens = lens_all[idx]
    starts = examples.prefixes.offsets[idx + 1] - lens
    items = np.zeros((padded, max_len), dtype=np.int32)
    items[:rows] = _gather(examples.prefixes.items, starts, lens, max_len)
    target = np.zeros(padded, dtype=np.int32)
    target[:rows] = examples.targets[idx]
    weight = np.zeros(padded, dtype=np.float32)
    weight[:rows] = 1.0
    yield from _emit(
        {"items": items, "target": target, "weight": weight}, lens, batch_size, length_bucket, rng
    )


def _check_stride(stride: int | None, max_len: int) -> int:
  stride = max_len if stride is None else int(stride)
  if not 1 <= stride <= max_len:
    raise ValueError(f"window stride must be in [1, max_len={max_len}], got {stride}")
  return stride


def windows(
    sequences: Sequences, max_len: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The training windows of `sequences`: (start, length, first_target), int64 [W] each.

  A sequence s of length n has inputs s[:-1] and targets s[1:] (m = n - 1
  positions). Windows of up to `max_len` inputs end at m, m - stride,
  m - 2 stride, ... until one starts at the sequence's beginning. A window
  predicts only its last `stride` targets (positions >= first_target inside
  the window), except the earliest, which predicts all of its targets, so
  every target is predicted exactly once per epoch. stride = max_len (the
  default) gives non-overlapping windows; a smaller stride gives every
  predicted target at least max_len - stride clicks of context (as in
  per-prefix training with histories cut to max_len) for max_len / stride
  times the compute. `start` indexes sequences.items (the window's first
  input); its targets start at start + 1. Windows are listed sequence by
  sequence, last window first.
  """
  _check(1, max_len)
  stride = _check_stride(stride, max_len)
  m = np.maximum(sequences.lengths() - 1, 0)
  count = np.where(m > 0, 1 + -(-np.maximum(m - max_len, 0) // stride), 0)
  seq = np.repeat(np.arange(len(m)), count)
  first = np.zeros(len(m) + 1, dtype=np.int64)
  np.cumsum(count, out=first[1:])
  j = np.arange(len(seq), dtype=np.int64) - first[seq]  # 0 = last window
  end = m[seq] - j * stride
  begin = np.maximum(end - max_len, 0)
  first_target = np.where(begin == 0, 0, end - stride - begin)
  return sequences.offsets[seq] + begin, end - begin, first_target


def num_windows(sequences: Sequences, max_len: int, stride: int | None = None) -> int:
  """Rows one epoch of window_batches yields (before filling the last batch)."""
  _check(1, max_len)
  stride = _check_stride(stride, max_len)
  m = np.maximum(sequences.lengths() - 1, 0)
  return int(np.where(m > 0, 1 + -(-np.maximum(m - max_len, 0) // stride), 0).sum())


def steps_per_epoch(
    sequences: Sequences, objective: str, batch_size: int, max_len: int, stride: int | None = None
) -> int:
  """Optimizer steps in one training epoch: batches of windows ('window', see
  `window_batches`) or of prefixes, one per target ('prefix', `prefix_batches`)."""
  if objective == "window":
    rows = num_windows(sequences, max_len, stride)
  elif objective == "prefix":
    rows = int(np.maximum(sequences.lengths() - 1, 0).sum())  # = len(prefix_augment(...))
  else:
    raise ValueError(f"objective must be 'window' or 'prefix', got {objective!r}")
  return num_batches(rows, batch_size)


def window_batches(
    sequences: Sequences,
    batch_size: int,
    max_len: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    stride: int | None = None,
    length_bucket: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """All-positions training batches (SASRec style), one epoch.

  Yields dicts: items int32 [B, L], targets int32 [B, L] (targets[b, t] is the
  click after items[b, :t+1]; 0 = none or predicted by another window),
  weights float32 [B, L] (1 where a target counts). Every training target
  appears exactly once per epoch. See `windows` for `stride`. L = max_len, or
  with length_bucket > 0 the batch's longest window rounded up to a multiple of
  length_bucket (windows of similar length batched together, as in
  `prefix_batches`).
  """
  _check(batch_size, max_len)
  length_bucket = _check_bucket(length_bucket)
  starts_all, lens_all, first_all = windows(sequences, max_len, stride)
  n = len(starts_all)
  order = _order(n, shuffle, seed, epoch)
  chunk = _rows_per_chunk(batch_size, max_len)
  positions = np.arange(max_len)[None, :]
  rng = np.random.default_rng([seed, epoch, 1]) if length_bucket else None
  for lo in range(0, n, chunk):
    idx = _by_length(order[lo : lo + chunk], lens_all, length_bucket)
    rows = len(idx)
    padded = -(-rows // batch_size) * batch_size
    starts, lens = starts_all[idx], lens_all[idx]
    items = np.zeros((padded, max_len), dtype=np.int32)
    targets = np.zeros((padded, max_len), dtype=np.int32)
    items[:rows] = _gather(sequences.items, starts, lens, max_len)
    targets[:rows] = _gather(sequences.items, starts + 1, lens, max_len)
    targets[:rows] *= positions >= first_all[idx][:, None]
    weights = (targets > 0).astype(np.float32)
    yield from _emit(
        {"items": items, "targets": targets, "weights": weights},
        lens,
        batch_size,
        length_bucket,
        rng,
    )


def hot_mask(item_counts: np.ndarray, fraction: float = 0.2) -> np.ndarray:
  """bool [num_items + 1]: the top `fraction` of items by training frequency.

  round(fraction * num_items) items are hot; ties in count go to the smaller
  id; padding (0) is never hot.
  """
  if not 0.0 <= fraction <= 1.0:
    raise DataError(f"hot fraction must be in [0, 1], got {fraction}")
  counts = np.asarray(item_counts)
  num_items = len(counts) - 1
  ranking = popularity_ranking(counts)
  mask = np.zeros(num_items + 1, dtype=bool)
  mask[ranking[: int(round(fraction * num_items))]] = True
  return mask


def popularity_ranking(item_counts: np.ndarray) -> np.ndarray:
  """int64 [num_items]: item ids 1..V by decreasing training count, ties by id."""
  counts = np.asarray(item_counts)[1:]
  return np.lexsort((np.arange(len(counts)), -counts.astype(np.int64))).astype(np.int64) + 1
