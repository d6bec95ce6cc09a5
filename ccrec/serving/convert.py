"""LiteRT (.tflite) and ONNX files of the serving graph: convert, run, verify, inspect.

Routes (the `export` extra: pip install -e '.[export]'), both from the JAX
function of ccrec/serving/graph.py:

  litert  jax.export -> StableHLO portable artifact -> litert-converter
          (Google AI Edge's TensorFlow-free converter) -> .tflite flatbuffer
  onnx    jax2onnx (traces the same function) -> .onnx (opset 23)

Runtimes: the ai-edge-litert interpreter (XNNPACK delegate by default) and
onnxruntime, one thread each.

`export_file` writes one model file, runs it with its own runtime on the
given sessions, compares its top-k lists with the Flax model's (see
`compare`) and only then gives it its name (a mismatch raises
VerificationError naming the sessions and leaves the file as
NAME.unverified.EXT), then writes the id map beside it (`ids_path`). An ONNX
model over the 2 GiB protobuf limit keeps its weights in PATH.data. Imports jax, numpy,
ccrec.models (through graph.py) and, inside functions, the converters and
runtimes; never ccrec.train or ccrec.evaluation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ccrec.models.recommender import ModelSpec
from ccrec.serving import graph

FORMATS = ("litert", "onnx")
EXTENSIONS = {"litert": ".tflite", "onnx": ".onnx"}
SIGNATURE = "serving_default"
INPUT_NAME = "items"
# ONNX forbids an output named like an input, so the ONNX item output is 'top_items'.
OUTPUT_NAMES = {"litert": ("items", "scores"), "onnx": ("top_items", "scores")}
ONNX_OPSET = 23
_PROTOBUF_LIMIT = 2**31 - 1  # bytes of one ONNX protobuf; larger models keep a .data file


class VerificationError(ValueError):
  """An exported file's top-k lists differ from the Flax model's."""


# ---------------------------------------------------------------------------- conversion


def to_litert(fn: Callable, example: jax.ShapeDtypeStruct) -> bytes:
  """The .tflite flatbuffer of fn (one signature 'serving_default': items -> items, scores)."""
  from litert_converter import converter_api_ext  # the optional export extra
  from litert_converter.mlir import ir, passmanager  # the optional export extra
  from litert_converter.mlir.dialects import stablehlo  # the optional export extra

  exported = jax.export.export(jax.jit(fn))(example)
  context = ir.Context()
  converter_api_ext.prepare_mlir_context(context)
  with context:
    module = stablehlo.deserialize_portable_artifact(context, exported.mlir_module_serialized)
    converter_api_ext.set_signature(
        module.operation, SIGNATURE, [INPUT_NAME], list(OUTPUT_NAMES["litert"])
    )
    config = converter_api_ext.ConvertToTFLConfig()
    converter_api_ext.run_convert_to_tfl_passes(module, passmanager.PassManager(), config)
    return converter_api_ext.export_flatbuffer_to_bytes(module.operation)


def to_onnx(fn: Callable, example: jax.ShapeDtypeStruct):
  """The onnx.ModelProto of fn (input 'items'; outputs 'top_items', 'scores')."""
  from jax2onnx import to_onnx as jax2onnx_to_onnx  # the optional export extra

  return jax2onnx_to_onnx(
      fn,
      [example],
      model_name="ccrec",
      opset=ONNX_OPSET,
      input_names=[INPUT_NAME],
      output_names=list(OUTPUT_NAMES["onnx"]),
  )


def write_model(
    fmt: str, fn: Callable, example: jax.ShapeDtypeStruct, path: str, data_name: str | None = None
) -> None:
  """Converts fn to `fmt` and writes it to path. An ONNX model over 2 GiB (the protobuf
  limit) keeps its weights in a file beside it, data_name (default: basename(path).data)."""
  if fmt == "litert":
    data = to_litert(fn, example)
    with open(path, "wb") as f:
      f.write(data)
  elif fmt == "onnx":
    import onnx  # the optional export extra

    model = to_onnx(fn, example)
    large = model.ByteSize() > _PROTOBUF_LIMIT
    location = data_name or os.path.basename(path) + ".data"
    onnx.save_model(model, path, save_as_external_data=large, location=location if large else None)
  else:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


# ---------------------------------------------------------------------------- running


def load_runner(
    path: str, *, num_threads: int = 1, xnnpack: bool = True
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """The file's own runtime: items int32 [B, L] -> (items int32, scores float32) as numpy.

  .tflite: ai-edge-litert Interpreter (xnnpack=False: builtin kernels only);
  .onnx: onnxruntime on CPU. Outputs keep the graph's shapes ([k] or [B, k]).
  """
  if path.endswith(".tflite"):
    from ai_edge_litert import interpreter as litert  # the optional export extra

    resolver = (
        litert.OpResolverType.AUTO
        if xnnpack
        else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interp = litert.Interpreter(
        model_path=path, num_threads=num_threads, experimental_op_resolver_type=resolver
    )
    runner = interp.get_signature_runner(SIGNATURE)
    names = OUTPUT_NAMES["litert"]

    def run(items):
      out = runner(**{INPUT_NAME: np.asarray(items, np.int32)})
      return out[names[0]], out[names[1]]

    run.interpreter = interp  # keeps the interpreter alive with the runner
    return run
  if path.endswith(".onnx"):
    import onnxruntime as ort  # the optional export extra

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = list(OUTPUT_NAMES["onnx"])

    def run(items):
      got = session.run(names, {INPUT_NAME: np.asarray(items, np.int32)})
      return got[0], got[1]

    return run
  raise ValueError(f"{path}: expected a .tflite or .onnx file")


# ---------------------------------------------------------------------------- inspection


def tensor_table(path: str) -> list[dict[str, Any]]:
  """The constant tensors stored in a model file: name, dtype (numpy name), shape, bytes.

  .tflite: the flatbuffer's tensors that own a buffer with data (a buffer shared by
  several tensors is listed once, under its first tensor). .onnx: the initializers
  and Constant-node tensors.
  """
  if path.endswith(".tflite"):
    return _tflite_constants(path)
  if path.endswith(".onnx"):
    return _onnx_constants(path)
  raise ValueError(f"{path}: expected a .tflite or .onnx file")


def _tflite_constants(path: str) -> list[dict[str, Any]]:
  from ai_edge_litert import schema_py_generated as schema  # the optional export extra

  with open(path, "rb") as f:
    data = f.read()
  model = schema.Model.GetRootAs(data, 0)
  types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
  out, seen = [], set()
  for g in range(model.SubgraphsLength()):
    sub = model.Subgraphs(g)
    for t in range(sub.TensorsLength()):
      tensor = sub.Tensors(t)
      index = tensor.Buffer()
      if index == 0 or index in seen:
        continue
      buffer = model.Buffers(index)
      nbytes = buffer.DataLength() or (buffer.Size() if buffer.Offset() > 1 else 0)
      if not nbytes:
        continue
      seen.add(index)
      out.append(
          {
              "name": tensor.Name().decode(),
              "dtype": types.get(tensor.Type(), "?"),
              "shape": [int(x) for x in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [],
              "bytes": int(nbytes),
          }
      )
  return out


def _onnx_constants(path: str) -> list[dict[str, Any]]:
  import onnx  # the optional export extra
  from onnx import numpy_helper  # the optional export extra

  model = onnx.load(path)
  tensors = list(model.graph.initializer)
  for node in model.graph.node:
    if node.op_type == "Constant":
      tensors += [a.t for a in node.attribute if a.name == "value"]
  out = []
  for t in tensors:
    array = numpy_helper.to_array(t, base_dir=os.path.dirname(path))
    out.append(
        {
            "name": t.name,
            "dtype": array.dtype.name,
            "shape": list(array.shape),
            "bytes": int(array.nbytes),
        }
    )
  return out


def code_tensors(table: list[dict[str, Any]], spec: ModelSpec) -> list[dict[str, Any]]:
  """The entries of a tensor table holding codes: integer tensors with a V axis (per-codebook
  or paired rows, `graph.pack_codes`; any layout, so a widened or transposed copy is found
  too)."""
  return [
      t
      for t in table
      if spec.num_items in t["shape"] and np.issubdtype(np.dtype(t["dtype"]), np.integer)
  ]


# ---------------------------------------------------------------------------- verification


def _reference_top_k(row: np.ndarray, k: int) -> np.ndarray:
  """The k ids of a score row [V+1] by score, ties by the smaller id (scoring.top_k's order)."""
  return np.lexsort((np.arange(len(row)), -row))[:k]


def compare(
    got_items: np.ndarray, got_scores: np.ndarray, reference: np.ndarray, rtol: float = 1e-5
) -> dict[str, Any]:
  """One session: the file's top-k (ids, scores) vs the Flax model's scores [V+1].

  The Flax list orders by score, ties by the smaller id (scoring.top_k's order).
  `identical`: the ids are equal in order. `tie_only`: they differ, but only
  where the Flax scores tie: the Flax scores of the two lists agree rank by
  rank to within rtol * max|score|. `different` otherwise, or if any of the
  file's scores differs from the Flax score of the same id by more than that,
  or an id is outside 1..V.
  """
  row = np.asarray(reference, np.float32)
  num_items = len(row) - 1
  k = len(got_items)
  want = _reference_top_k(row, k)
  ids = np.asarray(got_items, np.int64)
  got_scores = np.asarray(got_scores, np.float32)
  if (
      ids.min() < 1
      or ids.max() > num_items
      or len(set(ids.tolist())) != k
      or not np.all(np.isfinite(got_scores))
      or not np.all(np.isfinite(row[1:]))
  ):
    return {"status": "different", "rank_gap": float("inf"), "score_error": float("inf")}
  scale = float(np.abs(row[1:]).max()) or 1.0
  gap = float(np.abs(row[want] - row[ids]).max()) / scale
  error = float(np.abs(got_scores - row[ids]).max()) / scale
  if error > rtol:
    status = "different"
  elif np.array_equal(want, ids):
    status = "identical"
  else:
    status = "tie_only" if gap <= rtol else "different"
  return {"status": status, "rank_gap": gap, "score_error": error}


def verify(
    run: Callable,
    reference: Callable[[np.ndarray], np.ndarray],
    sessions: Sequence,
    max_len: int,
    *,
    batch: int | None = None,
    rtol: float = 1e-5,
    reference_batch: int = 256,
) -> dict[str, Any]:
  """Runs the file (run) and the Flax model (reference: items [B, L] -> scores [B, V+1])
  on every session (dense ids, non-empty) and compares each top-k (`compare`).

  batch: the file's fixed batch size (None: one session per call, outputs [k]).
  Returns counts, the worst relative gaps and the indices of the different sessions.
  """
  out = {
      "sessions": len(sessions),
      "identical": 0,
      "tie_only": 0,
      "different": 0,
      "max_rank_gap": 0.0,
      "max_score_error": 0.0,
      "rtol": rtol,
      "different_sessions": [],
  }
  for i, got_items, got_scores, ref in _side_by_side(
      run, reference, sessions, max_len, batch, reference_batch
  ):
    result = compare(got_items, got_scores, ref, rtol)
    out[result["status"]] += 1
    out["max_rank_gap"] = max(out["max_rank_gap"], result["rank_gap"])
    out["max_score_error"] = max(out["max_score_error"], result["score_error"])
    if result["status"] == "different":
      out["different_sessions"].append(i)
  return out


def _side_by_side(run, reference, sessions, max_len, batch, reference_batch):
  """Yields (session index, file's ids [k], file's scores [k], Flax scores [V+1])."""
  step = batch or 1
  for lo in range(0, len(sessions), reference_batch):
    chunk = list(sessions[lo : lo + reference_batch])
    ref = reference(graph.pack_sessions(chunk, max_len, reference_batch))
    for start in range(0, len(chunk), step):
      part = chunk[start : start + step]
      got_items, got_scores = run(graph.pack_sessions(part, max_len, step))
      got_items, got_scores = np.reshape(got_items, (step, -1)), np.reshape(got_scores, (step, -1))
      for j in range(len(part)):
        yield lo + start + j, got_items[j], got_scores[j], ref[start + j]


def agreement(
    run: Callable,
    reference: Callable[[np.ndarray], np.ndarray],
    sessions: Sequence,
    max_len: int,
    *,
    batch: int | None = None,
    reference_batch: int = 256,
) -> dict[str, Any]:
  """How far the file's top-k is from another model's (e.g. an int8 file against the
  float Flax model): mean |file's top-k & reference top-k| / k over the sessions, and
  the share of sessions whose k ids are the same set and the same list."""
  overlap, same_set, same_list, k = [], 0, 0, 0
  for _, got_items, _, ref in _side_by_side(
      run, reference, sessions, max_len, batch, reference_batch
  ):
    k = len(got_items)
    want = _reference_top_k(np.asarray(ref, np.float32), k)
    ids = np.asarray(got_items, np.int64)
    overlap.append(len(set(ids.tolist()) & set(want.tolist())) / k)
    same_set += set(ids.tolist()) == set(want.tolist())
    same_list += bool(np.array_equal(ids, want))
  n = len(overlap)
  return {
      "sessions": n,
      "k": k,
      "mean_overlap": float(np.mean(overlap)) if n else float("nan"),
      "same_set": same_set / n if n else float("nan"),
      "same_list": same_list / n if n else float("nan"),
  }


# ---------------------------------------------------------------------------- export


def ids_path(model_path: str) -> str:
  """The id map beside a model file: student.tflite -> student.tflite.json."""
  return model_path + ".json"


def array_bytes(spec: ModelSpec, variables: dict, quantize: str | None = None) -> dict:
  """Bytes of the arrays a file must hold (graph.graph_arrays): items and encoder + readout."""
  arrays = graph.graph_arrays(spec, variables, quantize)
  items = sum(a.nbytes for n, a in arrays.items() if n.startswith("items/"))
  return {"item_bytes": items, "encoder_bytes": sum(a.nbytes for a in arrays.values()) - items}


def export_file(
    output: str,
    spec: ModelSpec,
    variables: dict,
    *,
    fmt: str,
    k: int = 20,
    batch: int | None = None,
    quantize: str | None = None,
    pair_codes: bool = True,
    sessions: Sequence | None = None,
    raw_ids: Sequence[str] | None = None,
    popular: np.ndarray | None = None,
    extra: dict | None = None,
    rtol: float = 1e-5,
    overwrite: bool = False,
) -> dict[str, Any]:
  """Writes the model as a .tflite (fmt 'litert') or .onnx file and its id map; returns the
  report (also stored in the id map's 'export' field).

  Args:
    batch: None: one session per call (input [1, max_len], outputs [k]); B: a fixed
      batch (input [B, max_len], outputs [B, k]).
    quantize: 'int8': int8 codebooks and Dense kernels (graph.graph_arrays); the
      verification reference is the Flax model with the same weights dequantised, and
      the report's 'float_agreement' compares the file's top-k with the float model's
      (`agreement`) on the same sessions.
    pair_codes: codebooks stored and scored in pairs where K^2 <= 65536
      (`graph.pack_codes`); False: one row per codebook.
    sessions: dense-id sessions to verify on (e.g. every test prefix); None skips it.
    raw_ids: raw id of each dense id 0..V ('' at 0), for the id map; None: dense ids.
    popular: dense ids by decreasing training count, for the empty-session fallback.
    extra: further JSON fields recorded in the report (source workdir, dataset, ...).
  """
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
  if not output.endswith(EXTENSIONS[fmt]):
    raise ValueError(f"--format={fmt} writes a {EXTENSIONS[fmt]} file, got output {output!r}")
  for path in (output, ids_path(output)):
    if os.path.exists(path) and not overwrite:
      raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
  if raw_ids is not None and len(raw_ids) != spec.num_items + 1:
    raise ValueError(
        f"raw_ids has {len(raw_ids)} entries, expected num_items + 1 = " f"{spec.num_items + 1}"
    )
  fn = graph.serving_fn(
      spec,
      variables,
      k,
      single=batch is None,
      quantize=quantize,
      pair_codes=pair_codes,
      int16_codes=fmt == "litert",
  )
  example = graph.input_spec(spec, batch or 1)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  stem, ext = os.path.splitext(output)
  pending = stem + ".unverified" + ext
  write_model(fmt, fn, example, pending, data_name=os.path.basename(output) + ".data")
  report: dict[str, Any] = {
      "format": fmt,
      "file": os.path.basename(output),
      "kind": spec.embedding,
      "k": k,
      "batch": batch,
      "max_len": spec.max_len,
      "num_items": spec.num_items,
      "quantize": quantize,
      "pair_codes": spec.embedding == "codes"
      and graph.pairs_codebooks(spec.num_codebooks, spec.codebook_size, pair_codes),
      "signature": signature(fmt, spec, k, batch),
      "file_bytes": os.path.getsize(pending),
      **array_bytes(spec, variables, quantize),
  }
  report["file_over_arrays"] = report["file_bytes"] / (
      report["item_bytes"] + report["encoder_bytes"]
  )
  table = tensor_table(pending)
  report["code_tensors"] = code_tensors(table, spec) if spec.embedding == "codes" else []
  if sessions is not None:
    reference = graph.flax_scores(spec, graph.dequantized_variables(spec, variables, quantize))
    runner = load_runner(pending)
    check = verify(runner, reference, sessions, spec.max_len, batch=batch, rtol=rtol)
    report["verification"] = check
    if check["different"]:
      shown = check["different_sessions"][:20]
      raise VerificationError(
          f"{pending}: top-{k} differs from the Flax model's on {check['different']} of "
          f"{check['sessions']} sessions (beyond ties within rtol={rtol}): session indices "
          f"{shown}{' ...' if check['different'] > len(shown) else ''}; max rank gap "
          f"{check['max_rank_gap']:.3g}, max score error {check['max_score_error']:.3g} "
          "(relative to max|score|). The file was left there for inspection."
      )
    if quantize is not None:
      report["float_agreement"] = agreement(
          runner,
          graph.flax_scores(spec, variables),
          sessions,
          spec.max_len,
          batch=batch,
      )
  os.replace(pending, output)
  report.update(extra or {})
  write_ids(ids_path(output), report, raw_ids, popular)
  return report


def signature(fmt: str, spec: ModelSpec, k: int, batch: int | None) -> dict[str, Any]:
  """The model's inputs and outputs: name -> [dtype, shape]."""
  out_shape = [k] if batch is None else [batch, k]
  items_out, scores_out = OUTPUT_NAMES[fmt]
  return {
      "inputs": {INPUT_NAME: ["int32", [batch or 1, spec.max_len]]},
      "outputs": {items_out: ["int32", out_shape], scores_out: ["float32", out_shape]},
  }


def write_ids(
    path: str, report: dict[str, Any], raw_ids: Sequence[str] | None, popular: np.ndarray | None
) -> None:
  """The id map: raw_ids[dense id] (null: the model's ids are the dataset's), popular
  dense ids, and the export report."""
  doc = {
      "format": "ccrec-ids/1",
      "model_file": report["file"],
      "num_items": report["num_items"],
      "raw_ids": None if raw_ids is None else [str(r) for r in raw_ids],
      "popular": None if popular is None else [int(i) for i in popular],
      "export": report,
  }
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(doc, f)
  os.replace(tmp, path)
