"""Export a trained model (a ModelSpec and its Flax variables) as a bundle, and verify it.

The bundle's array names, shapes and dtypes come from the model itself: `bundle_layout`
runs `jax.eval_shape` of the Flax model's init (nothing is computed) and maps its
variables to bundle arrays; `export_model` checks the arrays it writes against that
layout, and the manifest records them. Nothing here lists the encoder's parameters.

This module imports jax (through ccrec.models); the runtime does not. Exporting a
trained workdir (launch/export.py) is `ccrec.workflow.export.export_workdir`, which
restores the workdir and calls `export_model` and `verify_bundle`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ccrec.data import popularity_ranking
from ccrec.item_layout import code_dtype
from ccrec.models.recommender import ModelSpec, SessionRecommender
from ccrec.models.tt import TTEmbedding
from ccrec.serving import bundle as bundle_lib
from ccrec.serving import evaluate as evaluate_lib
from ccrec.serving.bundle import BundleError
from ccrec.serving.manifest import DEFAULT_ENCODER, ENCODERS, GRU_ENCODERS
from ccrec.serving.runtime import Recommender, dequantize_codebooks

POPULAR_SIZE = 1000  # items kept for the empty-session fallback
Layout = dict[str, tuple[tuple[int, ...], np.dtype]]  # bundle array name -> (shape, dtype)


def quantize_codebooks(codebooks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float [M, K, d] -> (int8 [M, K, d], float32 scale [M, K]) with codeword ~= scale * int8.

  Symmetric per-codeword scale max|C_m[k]| / 127 (an all-zero codeword gets scale 1).
  """
  c = np.asarray(codebooks, np.float32)
  peak = np.abs(c).max(axis=-1)
  scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
  q = np.clip(np.rint(c / scale[..., None]), -127, 127).astype(np.int8)
  return q, scale


def require_served_encoder(spec: ModelSpec, what: str) -> None:
  """Raises unless `spec`'s encoder is one the serving layer computes (manifest.ENCODERS:
  the numpy runtime's twins in serving/nn.py), naming the encoder and `what` refuses it."""
  if spec.encoder not in ENCODERS:
    raise ValueError(f"{what} serves the encoders {ENCODERS}, not model.encoder={spec.encoder!r}")


def bundle_config(spec: ModelSpec, variables: dict, codebook_dtype: str = "float32") -> dict:
  """The manifest's config for a model (spec) and its variables: the encoder and its sizes,
  the readout, the item representation."""
  require_served_encoder(spec, "the numpy bundle")
  config = {
      "num_items": spec.num_items,
      "d": spec.d,
      "max_len": spec.max_len,
      "encoder": spec.encoder,
      "readout": spec.readout,
      "embedding": spec.embedding,
  }
  if spec.encoder in GRU_ENCODERS:
    config.update(gru_hidden=spec.gru_hidden, gru_layers=spec.gru_layers)
  else:
    config.update(
        num_blocks=spec.num_blocks,
        num_heads=spec.num_heads,
        inner=spec.inner,
        layer_norm_eps=float(spec.layer_norm_eps),
    )
  if spec.embedding == "codes":
    config.update(
        num_codebooks=spec.num_codebooks,
        codebook_size=spec.codebook_size,
        codebook_dtype=codebook_dtype,
    )
  elif spec.embedding == "tt":
    module = TTEmbedding(num_items=spec.num_items, features=spec.d, rank=spec.tt_rank)
    items, dims = module.factors()
    cores = variables["params"]["items"]
    ranks = [int(np.shape(cores[f"core_{k}"])[-1]) for k in range(len(items) - 1)]
    config["tt"] = {"item_factors": list(items), "d_factors": list(dims), "ranks": ranks}
  elif spec.embedding != "table":
    raise ValueError(f"cannot export embedding {spec.embedding!r}")
  return config


def bundle_arrays(
    spec: ModelSpec, variables: dict, codebook_dtype: str = "float32"
) -> dict[str, np.ndarray]:
  """Flax variables -> the bundle's named numpy arrays (encoder, readout, items)."""
  if codebook_dtype not in ("float32", "int8"):
    raise ValueError(f"codebook_dtype must be 'float32' or 'int8', got {codebook_dtype!r}")
  params = traverse_util.flatten_dict(dict(variables["params"]), sep="/")
  arrays = {
      name: np.asarray(a, np.float32)
      for name, a in params.items()
      if name.startswith(("encoder/", "readout/"))
  }
  if spec.embedding == "codes":
    codes = np.asarray(variables["codes"]["items"]["codes"])  # [V+1, M]
    arrays["items/codes"] = np.ascontiguousarray(
        codes.T.astype(code_dtype(spec.codebook_size))
    )  # [M, V+1]
    books = np.asarray(params["items/codebooks"], np.float32)
    if codebook_dtype == "int8":
      arrays["items/codebooks"], arrays["items/codebook_scale"] = quantize_codebooks(books)
    else:
      arrays["items/codebooks"] = books
  elif spec.embedding == "table":
    table = np.array(params["items/embedding"], np.float32)
    table[0] = 0.0  # padding, as ItemTable.table()
    arrays["items/embedding"] = table
  else:
    for name, a in params.items():
      if name.startswith("items/core_"):
        arrays[name] = np.asarray(a, np.float32)
  return arrays


def model_shapes(spec: ModelSpec) -> dict[str, jax.ShapeDtypeStruct]:
  """'collection/module/.../name' -> shape and dtype of every variable of
  SessionRecommender(spec), from `jax.eval_shape` of its init (nothing is computed)."""
  model = SessionRecommender(spec)
  items = jnp.zeros((1, spec.max_len), jnp.int32)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return traverse_util.flatten_dict(jax.eval_shape(lambda: model.init(rngs, items)), sep="/")


def bundle_layout(spec: ModelSpec, codebook_dtype: str = "float32") -> Layout:
  """name -> (shape, dtype) of every model array of a bundle of `spec`, from the model.

  Each param keeps its name (without 'params/') and shape, in float32; with int8
  codebooks, items/codebooks is int8 and items/codebook_scale [M, K] float32 is added.
  The codes ('codes' collection, [V+1, M]) become items/codes [M, V+1] of code_dtype(K),
  codebook-major. A variable of any other kind is an error: the bundle and the runtime
  would not know it.
  """
  f32 = np.dtype(np.float32)
  out: Layout = {}
  for name, leaf in model_shapes(spec).items():
    collection, _, path = name.partition("/")
    shape = tuple(int(n) for n in leaf.shape)
    if collection == "params" and path == "items/codebooks" and codebook_dtype == "int8":
      out[path] = (shape, np.dtype(np.int8))
      out["items/codebook_scale"] = (shape[:2], f32)
    elif collection == "params":
      out[path] = (shape, f32)
    elif name == "codes/items/codes":
      out[path] = (shape[::-1], code_dtype(spec.codebook_size))
    else:
      raise ValueError(
          f"the model has variable {name}, which a bundle cannot hold: add it "
          "to serving/export.py (bundle_layout, bundle_arrays, flax_variables) "
          "and to the runtime (docs/DESIGN.md, 'Change the encoder')"
      )
  return out


def check_layout(arrays: dict[str, np.ndarray], layout: Layout, where: str) -> None:
  """Raises BundleError naming the array unless `arrays` hold exactly the layout's arrays
  (names, shapes, dtypes), plus any meta/* arrays."""
  for name, (shape, dtype) in layout.items():
    if name not in arrays:
      raise BundleError(
          f"cannot export {where}: the model's array {name} {dtype} "
          f"{list(shape)} is missing from the variables"
      )
    if arrays[name].shape != shape or arrays[name].dtype != dtype:
      raise BundleError(
          f"cannot export {where}: array {name} is {arrays[name].dtype} "
          f"{list(arrays[name].shape)}, the model has {dtype} {list(shape)}"
      )
  unknown = sorted(n for n in arrays if n not in layout and not n.startswith("meta/"))
  if unknown:
    raise BundleError(f"cannot export {where}: arrays {unknown} are not the model's")


def spec_from_config(config: dict) -> ModelSpec:
  """The ModelSpec of a bundle config (inference only: dropout 0). A config without
  `encoder` is the transformer's; the sizes of the other encoder keep ModelSpec's
  defaults."""
  sizes = {
      key: config[key]
      for key in ("num_blocks", "num_heads", "inner", "layer_norm_eps", "gru_hidden", "gru_layers")
      if key in config
  }
  return ModelSpec(
      num_items=config["num_items"],
      d=config["d"],
      dropout=0.0,
      attn_dropout=0.0,
      max_len=config["max_len"],
      encoder=config.get("encoder", DEFAULT_ENCODER),
      readout=config["readout"],
      embedding=config["embedding"],
      num_codebooks=config.get("num_codebooks", 4),
      codebook_size=config.get("codebook_size", 32),
      tt_rank=(config["tt"]["ranks"][0] if config["embedding"] == "tt" else 8),
      **sizes,
  )


def flax_variables(config: dict, arrays: dict[str, np.ndarray]) -> dict:
  """A bundle's arrays -> variables of SessionRecommender(spec_from_config(config)).

  The inverse of `bundle_arrays` (int8 codebooks are dequantised), so a bundle
  can be checked against the JAX model it came from.
  """
  flat = {
      name: np.asarray(a)
      for name, a in arrays.items()
      if name.startswith(("encoder/", "readout/")) or name.startswith("items/core_")
  }
  out: dict = {}
  if config["embedding"] == "codes":
    books = arrays["items/codebooks"]
    if config["codebook_dtype"] == "int8":
      books = dequantize_codebooks(books, arrays["items/codebook_scale"])
    flat["items/codebooks"] = np.asarray(books, np.float32)
    out["codes"] = {"items": {"codes": np.ascontiguousarray(np.asarray(arrays["items/codes"]).T)}}
  elif config["embedding"] == "table":
    flat["items/embedding"] = np.asarray(arrays["items/embedding"])
  out["params"] = traverse_util.unflatten_dict(flat, sep="/")
  return out


def item_sizes(config: dict, arrays: dict[str, np.ndarray]) -> dict[str, float]:
  """Bytes of the item representation vs the fp32 [V+1, d] table."""
  item_bytes = sum(a.nbytes for n, a in arrays.items() if n.startswith("items/"))
  table = (config["num_items"] + 1) * config["d"] * 4
  encoder = sum(a.nbytes for n, a in arrays.items() if n.startswith(("encoder/", "readout/")))
  return {
      "item_bytes": float(item_bytes),
      "fp32_table_bytes": float(table),
      "item_ratio": table / item_bytes,
      "encoder_bytes": float(encoder),
  }


def raw_id_array(id_map: dict[str, int], num_items: int) -> np.ndarray | None:
  """Unicode [V+1] raw id of each dense id ('' at 0), or None unless id_map covers 1..V."""
  if not id_map or len(id_map) != num_items:
    return None
  raw = [""] * (num_items + 1)
  for key, dense in id_map.items():
    dense = int(dense)
    if not 1 <= dense <= num_items or raw[dense]:
      return None
    raw[dense] = str(key)
  return np.array(raw, dtype=str)


def export_model(
    output: str,
    spec: ModelSpec,
    variables: dict,
    *,
    codebook_dtype: str = "float32",
    item_counts: np.ndarray | None = None,
    id_map: dict[str, int] | None = None,
    metrics: dict[str, Any] | None = None,
    test: tuple[list, np.ndarray] | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
) -> dict:
  """Writes `variables` of a SessionRecommender(spec) as a bundle; returns the manifest.

  Args:
    item_counts: int [V+1] training counts -> meta/popular_items (fallback order).
    id_map: raw id -> dense id (the dataset manifest's) -> meta/raw_item_ids.
    metrics: recorded under manifest['metrics'] (e.g. the workdir's).
    test: (dense prefixes, targets): the runtime's own metrics on them are
      recorded as metrics['runtime/test/...'].
  """
  config = bundle_config(spec, variables, codebook_dtype)
  arrays = bundle_arrays(spec, variables, codebook_dtype)
  check_layout(arrays, bundle_layout(spec, codebook_dtype), output)
  if item_counts is not None:
    arrays["meta/popular_items"] = popularity_ranking(item_counts)[:POPULAR_SIZE].astype(np.int32)
  raw = raw_id_array(id_map or {}, spec.num_items)
  if raw is not None:
    arrays["meta/raw_item_ids"] = raw
  for name, a in arrays.items():  # before the runtime evaluates them
    bundle_lib.check_finite(a, f"cannot export {output}: array {name}")
  metrics = dict(metrics or {})
  if test is not None:
    manifest = {"config": config}
    rec = Recommender(manifest, arrays, id_space="dense")
    metrics.update(
        {f"runtime/test/{k}": v for k, v in evaluate_lib.evaluate(rec, test[0], test[1]).items()}
    )
  info = {"sizes": item_sizes(config, arrays), "item_ids": "raw" if raw is not None else "dense"}
  info.update(extra or {})
  return bundle_lib.write_bundle(
      output,
      arrays,
      kind=spec.embedding,
      config=config,
      metrics=metrics,
      extra=info,
      overwrite=overwrite,
  )


def compare_top_k(
    model,
    variables,
    rec: Recommender,
    prefixes: list,
    k: int = 20,
    batch_size: int = 256,
    rtol: float = 1e-5,
) -> dict[str, Any]:
  """The runtime's top-k lists vs the JAX model's on the same (dense, non-empty) prefixes.

  A list counts as `identical` if the ids are equal in order; `tie_only` if it
  differs only where the JAX model's own scores tie to within rtol * max|score|
  (rounding: numpy and XLA sum in different orders); anything else is
  `different`. The JAX lists are ordered by score, ties by the smaller id
  (scoring.top_k's order). Returns counts and the worst relative score gap.
  """
  max_len = rec.max_len

  @jax.jit
  def scores_fn(variables, items):
    s = model.apply(variables, items)["session"]
    return model.apply(variables, s, None, method="score")

  out = {
      "examples": 0,
      "identical": 0,
      "tie_only": 0,
      "different": 0,
      "k": k,
      "max_rel_score_gap": 0.0,
  }
  for lo in range(0, len(prefixes), batch_size):
    batch = [np.asarray(p, np.int64)[-max_len:] for p in prefixes[lo : lo + batch_size]]
    items = np.zeros((batch_size, max_len), np.int32)  # fixed shape: one compilation
    for i, p in enumerate(batch):
      items[i, : len(p)] = p
    want_scores = np.asarray(scores_fn(variables, jnp.asarray(items)))[: len(batch)]
    got = rec.recommend_batch(batch, k)
    for row, rec_k in zip(want_scores, got, strict=True):
      want = np.lexsort((np.arange(len(row)), -row))[:k]
      scale = np.abs(row[1:]).max()
      gap = float(np.abs(row[want] - row[rec_k.ids]).max() / scale) if scale > 0 else 0.0
      out["examples"] += 1
      out["max_rel_score_gap"] = max(out["max_rel_score_gap"], gap)
      if np.array_equal(want, rec_k.ids):
        out["identical"] += 1
      elif gap <= rtol:
        out["tie_only"] += 1
      else:
        out["different"] += 1
  return out


def verify_bundle(
    directory: str, spec: ModelSpec, prefixes: list, *, split: str = "test", batch_size: int = 256
) -> dict[str, Any]:
  """Compares the written bundle's top-20 lists with the JAX model's on `prefixes` (dense,
  non-empty; `split` names them) and records the counts as manifest['verification']
  (`compare_top_k`); returns them.

  The reference is SessionRecommender(spec) on the variables read back from the bundle,
  so with int8 codebooks it is the JAX model on the dequantised codebooks.
  """
  written, arrays = bundle_lib.read_bundle(directory)
  rec = Recommender(written, arrays, id_space="dense")
  reference = flax_variables(written["config"], arrays)
  verification = {
      "split": split,
      **compare_top_k(SessionRecommender(spec), reference, rec, prefixes, batch_size=batch_size),
  }
  bundle_lib.update_manifest(directory, {"verification": verification})
  return verification
