"""The serving graph: a trained model's spec + variables -> one JAX function, ids -> top-k.

`serving_fn(spec, variables, k)` returns a pure function of one int32 array,
with every weight closed over as a constant, for `jax.export` and the
converters (ccrec/serving/convert.py):

  items   int32 [B, max_len]   dense ids, left-aligned, 0 = padding; ids
                               outside 1..V are read as padding
  ->  items   int32 [B, k]     dense ids 1..V, best first (padding never)
      scores  float32 [B, k]   the model's scores of those ids

(`single=True`: B = 1 and the outputs are [k].) The transformer encoder and the
other readouts are the Flax modules of SessionRecommender, applied through
Flax; the GRU encoders are `gru_unrolled` (Flax's GRUCell applied position by
position: the converters take no loop); the 'last' readout is `last_state` (the
same value, without the cumulative max ONNX cannot express). Item look-up and
scoring are written out here so that the file keeps the compact item arrays:

  codes   codes [M, V], codebooks [M*K, d]. Scoring: T = s @ C^T, reshaped
          [B, M, K]; score(v) = sum_m T[:, m, code(v, m)], then top-k; never the
          [V, d] table. With pair_codes (the default where K^2 <= 65536),
          codebooks 2p and 2p+1 are stored as one row of pair indices
          code(v, 2p) * K + code(v, 2p+1) (`pack_codes`: uint8 if K^2 <= 256, else
          16 bits, the same bytes as two uint8 rows) and scored through the
          K^2-entry table T[:, 2p, :, None] + T[:, 2p+1, None, :]: half the
          whole-catalog gathers and casts, which dominate the runtimes' time.
          Otherwise one row per codebook, uint8 (uint16 for K > 256).
  table   float32 [V, d] (the teacher): s @ E^T, then top-k.
  tt      the TT cores; the session vector is contracted into the cores one
          at a time (2-D matmuls), giving every row's score without building
          the [V, d] table.

Item arrays hold rows 1..V only (the padding row is never scored), so top-k
index i is item i + 1. quantize='int8' (`graph_arrays`) stores the codebooks
and the encoder's and readout's Dense kernels as int8 with float32 scales.

Constants of the file. The converters evaluate ("fold") any op whose inputs
are all constants and store the result: a uint8 -> int32 cast of the codes
would be stored as int32 (4x the bytes), an int8 -> float32 dequantisation as
float32, a contraction of the TT cores as its result. So each compact array
is first read through a gather whose index is a zero computed from the input
ids (`_at_runtime`; the codes one row at a time, at zero + m): everything
after it runs at run time. Gathers use mode 'promise_in_bounds' (indices are
in range by construction: invalid ids become 0, codes < K): the default
'fill' mode adds selects the converters cannot legalise for uint8.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ccrec.item_layout import code_dtype
from ccrec.models.readout import h_at
from ccrec.models.recommender import ModelSpec, SessionRecommender
from ccrec.models.tt import TTEmbedding
from ccrec.serving.export import quantize_codebooks, require_served_encoder
from ccrec.serving.manifest import GRU_ENCODERS

QUANTIZE = (None, "int8")
SCALE = "_scale"  # graph_arrays: the scale of int8 array NAME is NAME + SCALE


def _get(table: jax.Array, index: jax.Array, axis: int = 0) -> jax.Array:
  """table gathered at index along axis, without bounds handling (index is in range)."""
  where = (slice(None),) * axis + (index,)
  return table.at[where].get(mode="promise_in_bounds", wrap_negative_indices=False)


def _at_runtime(x: np.ndarray, zero: jax.Array) -> jax.Array:
  """x as a run-time value (same dtype and values): x[None] gathered at row `zero` (== 0)."""
  return _get(jnp.asarray(x)[None], zero[None])[0]


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float [..., n] -> (int8 [..., n], float32 scale [..., 1]): symmetric, one scale per row
  (the bundle's codebook quantisation, ccrec.serving.export.quantize_codebooks)."""
  q, scale = quantize_codebooks(x)
  return q, scale[..., None]


def graph_arrays(
    spec: ModelSpec, variables: dict, quantize: str | None = None
) -> dict[str, np.ndarray]:
  """Every array the graph holds, by name (rows 1..V of the item arrays only).

  encoder/..., readout/...: the Flax params, float32. items/codes uint8|uint16 [M, V]
  and items/codebooks float32 [M*K, d] (codes); items/table float32 [V, d] (table);
  items/core_k float32 [r_{k-1}, n_k, d_k, r_k] (tt).
  quantize='int8': the codebooks (one scale per codeword) and every 2-D Dense kernel
  of the encoder and readout (one scale per output unit) become int8 NAME plus
  float32 NAME + SCALE; the graph dequantises them at run time.
  """
  if quantize not in QUANTIZE:
    raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
  flat = traverse_util.flatten_dict(dict(variables["params"]), sep="/")
  out = {
      name: np.asarray(a, np.float32)
      for name, a in flat.items()
      if name.startswith(("encoder/", "readout/"))
  }
  if spec.embedding == "codes":
    codes = np.asarray(variables["codes"]["items"]["codes"])  # [V+1, M]
    if codes.size and int(codes.max()) >= spec.codebook_size:
      raise ValueError(f"codes hold {int(codes.max())} >= K={spec.codebook_size}")
    out["items/codes"] = np.ascontiguousarray(codes[1:].T.astype(code_dtype(spec.codebook_size)))
    out["items/codebooks"] = np.asarray(flat["items/codebooks"], np.float32).reshape(-1, spec.d)
  elif spec.embedding == "table":
    out["items/table"] = np.ascontiguousarray(np.asarray(flat["items/embedding"], np.float32)[1:])
  elif spec.embedding == "tt":
    out.update(
        {
            name: np.asarray(a, np.float32)
            for name, a in flat.items()
            if name.startswith("items/core_")
        }
    )
  else:
    raise ValueError(f"cannot serve embedding {spec.embedding!r}")
  if quantize == "int8":
    for name in [
        n
        for n, a in out.items()
        if n == "items/codebooks" or (n.endswith("/kernel") and a.ndim == 2)
    ]:
      rows = out[name] if name == "items/codebooks" else out[name].T  # kernels: per output unit
      q, scale = quantize_rows(rows)
      out[name], out[name + SCALE] = (q, scale) if name == "items/codebooks" else (q.T, scale.T)
  return out


def dequantize(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """graph_arrays with every int8 array replaced by float32 int8 * scale (scales dropped)."""
  out = {}
  for name, a in arrays.items():
    if name.endswith(SCALE):
      continue
    out[name] = (a.astype(np.float32) * arrays[name + SCALE]) if a.dtype == np.int8 else a
  return out


def dequantized_variables(spec: ModelSpec, variables: dict, quantize: str | None) -> dict:
  """The variables the graph computes with (int8 arrays dequantised): the reference the
  exported file is verified against. Unchanged when quantize is None."""
  if quantize is None:
    return variables
  arrays = dequantize(graph_arrays(spec, variables, quantize))
  flat = traverse_util.flatten_dict(dict(variables["params"]), sep="/")
  for name, a in arrays.items():
    if name.startswith(("encoder/", "readout/")):
      flat[name] = a
  if spec.embedding == "codes":
    flat["items/codebooks"] = arrays["items/codebooks"].reshape(
        spec.num_codebooks, spec.codebook_size, spec.d
    )
  return dict(variables, params=traverse_util.unflatten_dict(flat, sep="/"))


_OFFSET = 32768  # int16 rows of indices that reach 32768 are stored minus this


def pairs_codebooks(num_codebooks: int, codebook_size: int, pair: bool = True) -> bool:
  """Whether `pack_codes` stores the codebooks in pairs: asked, M >= 2 and K^2 <= 65536."""
  return pair and num_codebooks > 1 and codebook_size * codebook_size <= 65536


def pack_codes(
    codes: np.ndarray, codebook_size: int, *, pair: bool = True, int16: bool = False
) -> list[tuple[np.ndarray, tuple[int, ...], int]]:
  """Codes [M, V] -> the rows the file stores: (row [V], codebooks it holds, offset).

  pair (where K^2 <= 65536): codebooks (0, 1), (2, 3), ... as one row of code_a * K +
  code_b; uint8 if K^2 <= 256, else uint16; an odd last codebook alone. Otherwise one row
  per codebook, code_dtype(K). int16 (LiteRT has no uint16 gather): 16-bit rows as int16,
  the same bytes: indices below 32768 (K^2 or K <= 32768) as they are; otherwise every
  index minus `_OFFSET`, the offset returned (added back at run time). Index =
  int32(row) + offset (`_Items.code_ints`).
  """
  k = codebook_size
  pair = pairs_codebooks(len(codes), k, pair)
  groups = [(m, m + 1) for m in range(0, len(codes) - 1, 2)] if pair else []
  groups += [(m,) for m in range(2 * len(groups), len(codes))]
  out = []
  for group in groups:
    if len(group) == 2:
      size = k * k
      index = codes[group[0]].astype(np.int32) * k + codes[group[1]]
    else:
      size = k
      index = codes[group[0]].astype(np.int32)
    dtype = code_dtype(size)
    offset = 0
    if int16 and dtype == np.uint16:
      offset = _OFFSET if size > _OFFSET else 0
      row = (index - offset).astype(np.int16)
    else:
      row = index.astype(dtype)
    out.append((np.ascontiguousarray(row), group, offset))
  return out


def _runtime_arrays(arrays: dict[str, np.ndarray], zero: jax.Array) -> dict[str, jax.Array]:
  """The graph's arrays as the computation reads them. int8 arrays and TT cores pass
  through `_at_runtime`, so that the file stores them as they are (int8 arrays are
  dequantised after it); the codes stay numpy, packed and gathered a row at a time by
  `_Items`."""
  out = {}
  for name, a in arrays.items():
    if name.endswith(SCALE):
      continue
    if name == "items/codes":  # packed and read a row at a time by _Items
      out[name] = a
    elif a.dtype == np.int8:
      out[name] = _at_runtime(a, zero).astype(jnp.float32) * jnp.asarray(arrays[name + SCALE])
    elif name.startswith("items/core_"):
      out[name] = _at_runtime(a, zero)
    else:
      out[name] = jnp.asarray(a)
  return out


class _Items:
  """Item look-up and scoring of one kind over its graph arrays (made run-time values)."""

  def __init__(
      self,
      spec: ModelSpec,
      arrays: dict[str, Any],
      zero: jax.Array,
      *,
      pair_codes: bool = False,
      int16_codes: bool = False,
  ):
    self.spec = spec
    self.kind = spec.embedding
    if self.kind == "codes":
      # Rows of one dtype are stored as one constant [n, V]; row i is gathered at zero + i:
      # a run-time value, no slice (LiteRT cannot slice int16).
      packed = pack_codes(
          np.asarray(arrays["items/codes"]),
          spec.codebook_size,
          pair=pair_codes,
          int16=int16_codes,
      )
      by_dtype: dict[Any, list] = {}
      for row, _, _ in packed:
        by_dtype.setdefault(row.dtype, []).append(row)
      stored = {dt: jnp.asarray(np.stack(rows)) for dt, rows in by_dtype.items()}
      self.groups = []  # (row [V] at run time, codebooks, offset)
      seen: dict[Any, int] = {}
      for row, group, offset in packed:
        i = seen[row.dtype] = seen.get(row.dtype, -1) + 1
        self.groups.append((_get(stored[row.dtype], (zero + i)[None]).reshape(-1), group, offset))
      self.books = arrays["items/codebooks"]  # [M*K, d]
    elif self.kind == "table":
      self.table = arrays["items/table"]  # [V, d]
    else:
      items, dims = TTEmbedding(
          num_items=spec.num_items, features=spec.d, rank=spec.tt_rank
      ).factors()
      self.item_factors, self.d_factors = items, dims
      self.cores = [arrays[f"items/core_{i}"] for i in range(len(items))]

  @staticmethod
  def code_ints(row: jax.Array, offset: int = 0) -> jax.Array:
    """A stored code row (`pack_codes`) -> int32 indices: int32(row) + offset."""
    wide = row.astype(jnp.int32)
    return wide + offset if offset else wide

  def lookup(self, ids: jax.Array) -> jax.Array:
    """ids int32 [B, L] in 0..V -> [B, L, d]; id 0 -> zeros."""
    b, length = ids.shape
    flat = ids.reshape(-1)
    rows = jnp.maximum(flat - 1, 0)
    if self.kind == "codes":
      k = self.spec.codebook_size
      emb = 0
      for row, group, offset in self.groups:
        index = self.code_ints(_get(row, rows), offset)
        codes = [index // k, index % k] if len(group) == 2 else [index]
        for m, code in zip(group, codes):
          emb = emb + _get(self.books, code + m * k)  # [N, d]
    elif self.kind == "table":
      emb = _get(self.table, rows)
    else:
      emb = self._tt_rows(flat)
    emb = emb * (flat > 0)[:, None].astype(emb.dtype)
    return emb.reshape(b, length, self.spec.d)

  def _tt_rows(self, rows: jax.Array) -> jax.Array:
    """TT rows [N] -> [N, d] (as TTEmbedding._rows, with in-bounds gathers)."""
    digits, stride = [], math.prod(self.item_factors)
    for n in self.item_factors:
      stride //= n
      digits.append((rows // stride) % n)
    out = _get(self.cores[0][0], digits[0])  # [N, d_1, r_1]
    for core, digit in zip(self.cores[1:], digits[1:]):
      g = _get(core, digit, axis=1)  # [r, N, d_k, r']
      out = jnp.einsum("nar,rnbs->nabs", out, g)
      out = out.reshape(out.shape[0], -1, out.shape[-1])
    return out[..., 0]

  def score(self, s: jax.Array) -> jax.Array:
    """s [B, d] -> float32 [B, V], column i = item i + 1."""
    spec = self.spec
    if self.kind == "codes":
      m, k = spec.num_codebooks, spec.codebook_size
      t = (s @ self.books.T).reshape(-1, m, k)  # [B, M, K]
      total = 0
      for row, group, offset in self.groups:
        if len(group) == 2:  # the K^2 sums of the pair's codewords, index a * K + b
          table = (t[:, group[0], :, None] + t[:, group[1], None, :]).reshape(-1, k * k)
        else:
          table = t[:, group[0]]
        total = total + _get(table, self.code_ints(row, offset), axis=1)
      return total
    if self.kind == "table":
      return s @ self.table.T
    return self._tt_score(s)[:, 1 : spec.num_items + 1]

  def _tt_score(self, s: jax.Array) -> jax.Array:
    """s [B, d] -> [B, N] scores of every TT row: s contracted into the cores left to right."""
    # p [B * rows so far, rest of d, r]: s against the cores 1..k-1 (rows = their digits).
    # Each step is one 2-D matmul over (d_k, r_{k-1}): litert-converter mis-lowered the
    # same contraction written as one 5-D einsum (wrong scores, no error).
    b = s.shape[0]
    p = s.reshape(b, -1, 1)
    for core, d_k in zip(self.cores, self.d_factors):
      r, n, _, r_next = core.shape
      rows, rest = p.shape[0], p.shape[1] // d_k
      lhs = p.reshape(rows, d_k, rest, r).transpose(0, 2, 1, 3).reshape(rows * rest, d_k * r)
      rhs = core.transpose(2, 0, 1, 3).reshape(d_k * r, n * r_next)
      p = (lhs @ rhs).reshape(rows, rest, n, r_next).transpose(0, 2, 1, 3)  # [rows, n, ...]
      p = p.reshape(rows * n, rest, r_next)
    return p.reshape(b, -1)


def gru_unrolled(spec: ModelSpec, params: dict, x: jax.Array, mask: jax.Array) -> jax.Array:
  """GRUEncoder's value (ccrec/models/gru.py, at inference) with its loop over the positions
  written out: Flax's GRUCell applied position by position, layer by layer, then the
  projection; zero at padding. x [B, L, d], mask [B, L] -> [B, L, d]. nn.RNN's scan is a
  loop litert-converter cannot export, and jax2onnx cannot trace nn.RNN."""
  h = x
  for i in range(spec.gru_layers):
    cell = nn.GRUCell(spec.gru_hidden)
    weights = {"params": params[f"gru_{i}"]}
    carry = jnp.zeros((h.shape[0], spec.gru_hidden), h.dtype)
    states = []
    for t in range(h.shape[1]):
      carry, out = cell.apply(weights, carry, h[:, t])
      states.append(out)
    h = jnp.stack(states, axis=1)
  h = nn.Dense(spec.d).apply({"params": params["project"]}, h)
  return h * mask[..., None].astype(h.dtype)


def last_state(h: jax.Array, mask: jax.Array) -> jax.Array:
  """LastReadout's value, h [B, L, d] at the highest allowed position (zeros if none), found
  with a max over positions: LastReadout's cumulative max becomes an int32 MaxPool in
  jax2onnx, which ONNX does not allow."""
  positions = jnp.arange(mask.shape[-1], dtype=jnp.int32)
  last = jnp.max(jnp.where(mask, positions, -1), axis=-1)
  return h_at(h, last[:, None])[:, 0]


def serving_fn(
    spec: ModelSpec,
    variables: dict,
    k: int = 20,
    *,
    single: bool = True,
    quantize: str | None = None,
    pair_codes: bool = True,
    int16_codes: bool = False,
) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
  """items int32 [B, max_len] -> (items int32 [B, k], scores float32 [B, k]); see module doc.

  single: outputs [k] (the input must have B = 1).
  quantize: 'int8' stores int8 codebooks and Dense kernels (see `graph_arrays`).
  pair_codes: codebooks stored and scored in pairs where K^2 <= 65536 (`pack_codes`).
  int16_codes: 16-bit code rows are stored as int16 (same bytes; `pack_codes`); LiteRT
    has no uint16 gather.
  """
  if not 1 <= k <= spec.num_items:
    raise ValueError(f"k must be in 1..num_items={spec.num_items}, got {k}")
  require_served_encoder(spec, "an exported model file")
  arrays = graph_arrays(spec, variables, quantize)
  model = SessionRecommender(spec)
  num_items = spec.num_items

  def encode(module, x, mask):
    if spec.encoder in GRU_ENCODERS:
      h = gru_unrolled(spec, module.encoder.variables["params"], x, mask)
    else:
      h = module.encoder(x, mask, deterministic=True)
    if spec.readout == "last":
      return last_state(h, mask)
    if spec.readout == "narm":  # the query through last_state: no cummax in the graph
      return module.readout.combine(h, mask, last_state(h, mask))
    return module.readout(h, mask)

  def fn(items: jax.Array) -> tuple[jax.Array, jax.Array]:
    ids = jnp.where((items >= 1) & (items <= num_items), items, 0).astype(jnp.int32)
    zero = jnp.minimum(ids[0, 0], 0)  # 0, but not a constant (see the module docstring)
    values = _runtime_arrays(arrays, zero)
    params = traverse_util.unflatten_dict(
        {n: a for n, a in values.items() if not n.startswith("items/")}, sep="/"
    )
    table = _Items(spec, values, zero, pair_codes=pair_codes, int16_codes=int16_codes)
    mask = ids > 0
    s = model.apply({"params": params}, table.lookup(ids), mask, method=encode)  # [B, d]
    scores, index = jax.lax.top_k(table.score(s), k)
    top = (index + 1).astype(jnp.int32)
    if single:
      return top[0], scores[0]
    return top, scores

  return fn


def input_spec(spec: ModelSpec, batch: int = 1) -> jax.ShapeDtypeStruct:
  """The graph's input: int32 [batch, max_len]."""
  return jax.ShapeDtypeStruct((batch, spec.max_len), jnp.int32)


def pack_sessions(sessions: list, max_len: int, batch: int | None = None) -> np.ndarray:
  """Dense id sessions -> int32 [batch or len(sessions), max_len], the last max_len of each,
  left-aligned, zero-padded (as ccrec's batches)."""
  out = np.zeros((batch or len(sessions), max_len), np.int32)
  for i, session in enumerate(sessions):
    tail = np.asarray(session, np.int64)[-max_len:]
    out[i, : len(tail)] = tail
  return out


def flax_scores(spec: ModelSpec, variables: dict) -> Callable[[np.ndarray], np.ndarray]:
  """items int32 [B, max_len] -> float32 [B, V+1]: the Flax model's own scores (column 0,
  padding, -inf), jitted; the reference the exported files are checked against."""
  model = SessionRecommender(spec)

  @jax.jit
  def run(variables: Any, items: jax.Array) -> jax.Array:
    s = model.apply(variables, items)["session"]
    return model.apply(variables, s, None, method="score")

  return lambda items: np.asarray(run(variables, jnp.asarray(items)))
