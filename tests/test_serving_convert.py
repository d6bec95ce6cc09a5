"""Serving graph and model files: graph == Flax model, .tflite/.onnx contents, verification.

The graph tests need jax only; the file tests skip unless the export extra
(pip install -e '.[export]') is installed, as CI does.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ccrec.benchmarks.ondevice import random_arrays
from ccrec.models.recommender import SessionRecommender
from ccrec.models.tt import auto_item_factors, factorize_exact
from ccrec.serving import convert, export, graph

NUM_ITEMS = 80
MAX_LEN = 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(embedding="codes", readout="soft_attention", encoder="transformer", **kw):
  config = {
      "num_items": NUM_ITEMS,
      "d": 8,
      "max_len": MAX_LEN,
      "encoder": encoder,
      "readout": readout,
      "embedding": embedding,
  }
  if encoder == "transformer":
    config.update(num_blocks=1, num_heads=2, inner=16, layer_norm_eps=1e-12)
  else:
    config.update(gru_hidden=12, gru_layers=2)
  if embedding == "codes":
    config.update(num_codebooks=2, codebook_size=16, codebook_dtype="float32")
  if embedding == "tt":
    config["tt"] = {
        "item_factors": list(auto_item_factors(NUM_ITEMS + 1, 3)),
        "d_factors": list(factorize_exact(8, 3)),
        "ranks": [2, 2],
    }
  config.update(kw)
  return config


def _model(embedding="codes", readout="soft_attention", seed=0, **kw):
  config = _config(embedding, readout, **kw)
  arrays = random_arrays(config, np.random.default_rng(seed), scale=0.3)
  return export.spec_from_config(config), export.flax_variables(config, arrays)


def _sessions(n=40, seed=3):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, NUM_ITEMS + 1, int(m)) for m in rng.integers(1, 9, n)]


def _flax_top(spec, variables, items, k):
  """The Flax model's top-k ids (score order, ties by the smaller id) and scores."""
  scores = graph.flax_scores(spec, variables)(items)
  ids = np.stack([np.lexsort((np.arange(len(r)), -r))[:k] for r in scores])
  return ids, np.take_along_axis(scores, ids, axis=1)


# ---------------------------------------------------------------------------- the graph (jax)


@pytest.mark.parametrize("embedding", ["codes", "table", "tt"])
@pytest.mark.parametrize("readout", ["soft_attention", "last"])
def test_graph_gives_the_flax_models_top_k(embedding, readout):
  spec, variables = _model(embedding, readout)
  items = graph.pack_sessions(_sessions(16), MAX_LEN)
  got_ids, got_scores = jax.jit(graph.serving_fn(spec, variables, 10, single=False))(items)
  want_ids, want_scores = _flax_top(spec, variables, items, 10)
  assert got_ids.dtype == np.int32 and got_scores.dtype == np.float32
  np.testing.assert_array_equal(got_ids, want_ids)
  np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "embedding,readout,encoder",
    [
        ("codes", "last", "gru4rec"),
        ("codes", "soft_attention", "gru4rec"),
        ("table", "last", "gru4rec"),
        ("tt", "last", "gru4rec"),
        ("codes", "narm", "narm"),
        ("table", "narm", "narm"),
    ],
)
def test_gru4rec_graph_gives_the_flax_models_top_k(embedding, readout, encoder):
  """The GRU written out over max_len positions (`graph.gru_unrolled`) is the Flax model's
  scan; the graph holds no loop (the converters take none)."""
  spec, variables = _model(embedding, readout, encoder=encoder)
  items = graph.pack_sessions(_sessions(16), MAX_LEN)
  fn = graph.serving_fn(spec, variables, 10, single=False)
  got_ids, got_scores = jax.jit(fn)(items)
  want_ids, want_scores = _flax_top(spec, variables, items, 10)
  np.testing.assert_array_equal(got_ids, want_ids)
  np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
  text = jax.export.export(jax.jit(fn))(graph.input_spec(spec, 16)).mlir_module()
  assert "stablehlo.while" not in text


def test_single_session_outputs_k_and_never_padding():
  spec, variables = _model()
  fn = jax.jit(graph.serving_fn(spec, variables, NUM_ITEMS))  # every item
  ids, scores = fn(graph.pack_sessions([[3, 9, 4]], MAX_LEN))
  assert ids.shape == scores.shape == (NUM_ITEMS,)
  assert sorted(np.asarray(ids).tolist()) == list(range(1, NUM_ITEMS + 1))  # no 0, no repeat
  assert np.all(np.diff(np.asarray(scores)) <= 0)


def test_ids_outside_the_catalog_read_as_padding():
  spec, variables = _model("table")
  fn = jax.jit(graph.serving_fn(spec, variables, 5, single=False))
  clean = np.array([[7, 3, 0, 0, 0]], np.int32)
  dirty = np.array([[7, 3, NUM_ITEMS + 1, -4, 2**31 - 1]], np.int32)
  got, want = fn(dirty), fn(clean)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])


def test_tt_contraction_scores_every_row_like_the_table():
  spec, variables = _model("tt")
  model = SessionRecommender(spec)
  s = np.random.default_rng(1).standard_normal((3, spec.d)).astype(np.float32)
  want = np.asarray(model.apply(variables, s, None, method="score"))[:, 1:]
  arrays = graph._runtime_arrays(graph.graph_arrays(spec, variables), jax.numpy.int32(0))
  got = np.asarray(graph._Items(spec, arrays, jax.numpy.int32(0)).score(s))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_graph_arrays_int8():
  spec, variables = _model()
  full = graph.graph_arrays(spec, variables)
  q = graph.graph_arrays(spec, variables, "int8")
  assert full["items/codes"].dtype == np.uint8 and full["items/codes"].shape == (2, NUM_ITEMS)
  assert q["items/codebooks"].dtype == np.int8 and q["items/codebooks_scale"].shape == (32, 1)
  kernel = "encoder/block_0/ff_in/kernel"
  assert q[kernel].dtype == np.int8 and q[kernel + "_scale"].shape == (1, 16)  # per output unit
  assert q["encoder/ln_in/scale"].dtype == np.float32  # only 2-D kernels and codebooks
  back = graph.dequantize(q)
  assert set(back) == set(full)
  for name in (kernel, "items/codebooks"):
    peak = np.abs(full[name]).max(axis=0 if name == kernel else 1, keepdims=True)
    assert np.all(np.abs(back[name] - full[name]) <= peak / 254 + 1e-7), name
  with pytest.raises(ValueError, match="quantize must be"):
    graph.graph_arrays(spec, variables, "int4")


@pytest.mark.parametrize("codebook_size", [16, 181, 256, 300])
@pytest.mark.parametrize("num_codebooks", [2, 3])
def test_graph_top_k_with_paired_and_single_code_rows(codebook_size, num_codebooks):
  spec, variables = _model(codebook_size=codebook_size, num_codebooks=num_codebooks)
  items = graph.pack_sessions(_sessions(8), MAX_LEN)
  want = _flax_top(spec, variables, items, 10)[0]
  for pair_codes in (True, False):
    for int16_codes in (False, True):
      fn = graph.serving_fn(
          spec, variables, 10, single=False, pair_codes=pair_codes, int16_codes=int16_codes
      )
      np.testing.assert_array_equal(jax.jit(fn)(items)[0], want)


@pytest.mark.parametrize(
    "k, m, pair, int16, layout",
    [
        # (K, M, pair, int16) -> [(dtype, codebooks, offset)] of the stored rows
        (16, 2, True, False, [("uint8", (0, 1), 0)]),  # K^2 = 256: a pair in one byte
        (16, 3, True, False, [("uint8", (0, 1), 0), ("uint8", (2,), 0)]),
        (181, 2, True, False, [("uint16", (0, 1), 0)]),
        (181, 2, True, True, [("int16", (0, 1), 0)]),  # K^2 <= 32768: fits int16 as is
        (256, 2, True, True, [("int16", (0, 1), 32768)]),  # stored minus 32768
        (256, 2, False, True, [("uint8", (0,), 0), ("uint8", (1,), 0)]),
        (300, 2, True, False, [("uint16", (0,), 0), ("uint16", (1,), 0)]),  # K^2 > 65536
        (300, 2, True, True, [("int16", (0,), 0), ("int16", (1,), 0)]),  # K < 32768: as is
    ],
)
def test_pack_codes_layout_and_round_trip(k, m, pair, int16, layout):
  rng = np.random.default_rng(0)
  codes = rng.integers(0, k, (m, 500)).astype(np.uint8 if k <= 256 else np.uint16)
  codes[:, 0], codes[:, 1] = 0, k - 1  # the extremes of every codebook
  packed = graph.pack_codes(codes, k, pair=pair, int16=int16)
  assert [(str(r.dtype), g, o) for r, g, o in packed] == layout
  for row, group, offset in packed:
    index = np.asarray(graph._Items.code_ints(jax.numpy.asarray(row), offset))
    got = [index // k, index % k] if len(group) == 2 else [index]
    for i, m_ in enumerate(group):
      np.testing.assert_array_equal(got[i], codes[m_])
  assert sum(r.nbytes for r, _, _ in packed) <= codes.nbytes  # never more bytes


# ---------------------------------------------------------------------------- verification


def test_compare_statuses():
  row = np.array([-np.inf, 1.0, 3.0, 3.0, 0.5, 2.0], np.float32)
  ok = convert.compare(np.array([2, 3, 5]), np.array([3.0, 3.0, 2.0]), row)
  assert ok["status"] == "identical"
  tie = convert.compare(np.array([3, 2, 5]), np.array([3.0, 3.0, 2.0]), row)
  assert tie["status"] == "tie_only"
  order = convert.compare(np.array([2, 5, 3]), np.array([3.0, 2.0, 3.0]), row)
  assert order["status"] == "different" and order["rank_gap"] == pytest.approx(1 / 3)
  scores = convert.compare(np.array([2, 3, 5]), np.array([3.0, 3.0, 2.1]), row)
  assert scores["status"] == "different" and scores["score_error"] == pytest.approx(0.1 / 3)
  for bad in ([0, 2, 3], [2, 2, 3], [2, 3, 6]):  # padding, a repeat, out of range
    assert convert.compare(np.array(bad), np.zeros(3), row)["status"] == "different"
  nan = convert.compare(np.array([2, 3, 5]), np.array([3.0, np.nan, 2.0]), row)
  assert nan["status"] == "different"


def test_verify_names_the_different_sessions():
  spec, variables = _model()
  sessions = _sessions(7)
  run = jax.jit(graph.serving_fn(spec, variables, 5))
  reference = graph.flax_scores(spec, variables)
  good = convert.verify(lambda x: run(x), reference, sessions, MAX_LEN)
  assert good["identical"] + good["tie_only"] == 7 and good["different"] == 0

  def broken(items):  # sessions starting with an even id get the wrong list
    ids, scores = run(items)
    return (ids[::-1], scores[::-1]) if items[0, 0] % 2 == 0 else (ids, scores)

  bad = convert.verify(broken, reference, sessions, MAX_LEN)
  want = [i for i, s in enumerate(sessions) if s[-MAX_LEN:][0] % 2 == 0]
  assert bad["different_sessions"] == want and want


def test_agreement_counts_shared_ids_sets_and_lists():
  # Reference scores [V+1 = 6]: its top-3 is [2, 3, 5] (3 and 1 tie below 5: smaller id).
  row = np.array([0.0, 1.0, 9.0, 8.0, 0.5, 7.0], np.float32)
  answers = {
      1: [2, 3, 5],  # the same list
      2: [3, 2, 5],  # the same set, another order
      3: [2, 3, 1],  # two of three
      4: [4, 1, 3],  # one of three
  }

  def run(items):  # the session's first id picks the answer
    ids = np.array(answers[int(items[0, 0])], np.int32)
    return ids, np.zeros(3, np.float32)

  reference = lambda items: np.tile(row, (len(items), 1))
  got = convert.agreement(run, reference, [[1], [2], [3], [4]], MAX_LEN)
  assert got["sessions"] == 4 and got["k"] == 3
  assert got["mean_overlap"] == pytest.approx((1 + 1 + 2 / 3 + 1 / 3) / 4)
  assert got["same_set"] == 0.5 and got["same_list"] == 0.25


# ---------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def converters():
  for module in ("litert_converter", "ai_edge_litert", "jax2onnx", "onnxruntime", "onnx"):
    pytest.importorskip(
        module, reason="the export extra is not installed " "(pip install -e '.[export]')"
    )


def _codes_entry(report):
  (entry,) = report["code_tensors"]  # exactly one copy of the codes in the file
  return entry


@pytest.mark.parametrize("fmt", convert.FORMATS)
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_student_file_keeps_uint8_codes_and_is_verified(converters, tmp_path, fmt, quantize):
  spec, variables = _model()
  out = str(tmp_path / f"student{convert.EXTENSIONS[fmt]}")
  sessions = _sessions()
  raw = [""] + [f"item{i}" for i in range(1, NUM_ITEMS + 1)]
  report = convert.export_file(
      out,
      spec,
      variables,
      fmt=fmt,
      k=10,
      quantize=quantize,
      sessions=sessions,
      raw_ids=raw,
      popular=np.arange(1, 11),
  )
  check = report["verification"]
  assert check["sessions"] == len(sessions) and check["different"] == 0
  assert check["identical"] + check["tie_only"] == len(sessions)
  # int8: the file's top-k against the float model's, on the same sessions.
  if quantize:
    assert report["float_agreement"] == convert.agreement(
        convert.load_runner(out), graph.flax_scores(spec, variables), sessions, MAX_LEN
    )
    assert report["float_agreement"]["sessions"] == len(sessions)
  else:
    assert "float_agreement" not in report
  # The tensor table, read back from the file: the two codebooks (K = 16) paired into one
  # uint8 row of K^2 = 256 pair indices, V bytes, nothing widened.
  table = convert.tensor_table(out)
  codes = [t for t in table if NUM_ITEMS in t["shape"]]
  assert [(t["dtype"], t["bytes"]) for t in codes] == [("uint8", NUM_ITEMS)]
  assert report["pair_codes"]
  assert _codes_entry(report)["dtype"] == "uint8"
  books = [t for t in table if sorted(t["shape"])[-2:] == [8, 32]]
  assert [t["dtype"] for t in books] == ["int8" if quantize else "float32"]
  if quantize:
    kernels = [t for t in table if t["shape"] in ([8, 16], [16, 8], [1, 8, 16], [1, 16, 8])]
    assert sorted(t["dtype"] for t in kernels) == ["int8", "int8"]  # ff_in, ff_out
  assert not os.path.exists(str(tmp_path / f"student.unverified{convert.EXTENSIONS[fmt]}"))
  doc = json.load(open(convert.ids_path(out)))
  assert doc["raw_ids"] == raw and doc["popular"] == list(range(1, 11))
  assert doc["export"]["signature"]["outputs"][convert.OUTPUT_NAMES[fmt][0]] == ["int32", [10]]
  # The runner on one session: the Flax model's list (ties aside).
  ids, scores = convert.load_runner(out)(graph.pack_sessions([[4, 8, 15]], MAX_LEN))
  reference = graph.flax_scores(spec, graph.dequantized_variables(spec, variables, quantize))
  assert (
      convert.compare(ids, scores, reference(graph.pack_sessions([[4, 8, 15]], MAX_LEN))[0])[
          "status"
      ]
      != "different"
  )


@pytest.mark.parametrize("fmt", convert.FORMATS)
def test_narm_student_file_is_verified(converters, tmp_path, fmt):
  spec, variables = _model(readout="narm", encoder="narm")
  out = str(tmp_path / f"narm{convert.EXTENSIONS[fmt]}")
  sessions = _sessions()
  report = convert.export_file(out, spec, variables, fmt=fmt, k=10, sessions=sessions)
  check = report["verification"]
  assert check["sessions"] == len(sessions) and check["different"] == 0
  codes = [t for t in convert.tensor_table(out) if NUM_ITEMS in t["shape"]]
  assert [(t["dtype"], t["bytes"]) for t in codes] == [("uint8", NUM_ITEMS)]  # K=16: paired


@pytest.mark.parametrize("fmt", convert.FORMATS)
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_gru4rec_student_file_keeps_uint8_codes_and_is_verified(
    converters, tmp_path, fmt, quantize
):
  spec, variables = _model(readout="last", encoder="gru4rec")
  out = str(tmp_path / f"gru{convert.EXTENSIONS[fmt]}")
  sessions = _sessions()
  report = convert.export_file(
      out, spec, variables, fmt=fmt, k=10, quantize=quantize, sessions=sessions
  )
  check = report["verification"]
  assert check["sessions"] == len(sessions) and check["different"] == 0
  table = convert.tensor_table(out)
  codes = [t for t in table if NUM_ITEMS in t["shape"]]
  assert [(t["dtype"], t["bytes"]) for t in codes] == [("uint8", NUM_ITEMS)]  # K=16: paired
  # The 2 x 6 GRU kernels ([8, 12] input of layer 0, [12, 12] the others) and the [12, 8]
  # projection: int8 with quantize, float32 without (one copy each).
  kernels = [t for t in table if t["shape"][-2:] in ([8, 12], [12, 12], [12, 8])]
  assert sorted(t["dtype"] for t in kernels) == ["int8" if quantize else "float32"] * 13
  ids, scores = convert.load_runner(out)(graph.pack_sessions([[4, 8, 15]], MAX_LEN))
  reference = graph.flax_scores(spec, graph.dequantized_variables(spec, variables, quantize))
  want = reference(graph.pack_sessions([[4, 8, 15]], MAX_LEN))[0]
  assert convert.compare(ids, scores, want)["status"] != "different"


@pytest.mark.parametrize("fmt", convert.FORMATS)
def test_gru4rec_teacher_file_batch_variant(converters, tmp_path, fmt):
  spec, variables = _model("table", encoder="gru4rec")  # soft-attention readout
  out = str(tmp_path / f"m{convert.EXTENSIONS[fmt]}")
  sessions = _sessions(9)
  report = convert.export_file(out, spec, variables, fmt=fmt, k=5, batch=4, sessions=sessions)
  assert report["verification"]["different"] == 0 and report["verification"]["sessions"] == 9


@pytest.mark.parametrize("fmt", convert.FORMATS)
@pytest.mark.parametrize("pair_codes", [True, False])
def test_codes_256_paired_or_not_in_the_file(converters, tmp_path, fmt, pair_codes):
  spec, variables = _model(codebook_size=256)
  out = str(tmp_path / f"s{convert.EXTENSIONS[fmt]}")
  report = convert.export_file(
      out, spec, variables, fmt=fmt, k=5, pair_codes=pair_codes, sessions=_sessions(9)
  )
  assert report["verification"]["different"] == 0 and report["pair_codes"] == pair_codes
  entry = _codes_entry(report)  # one copy, M * V bytes either way
  if pair_codes:  # K^2 = 65536 pair indices in 16 bits; LiteRT: int16, stored minus 32768
    assert (entry["dtype"], entry["bytes"]) == (
        "int16" if fmt == "litert" else "uint16",
        2 * NUM_ITEMS,
    )
  else:
    assert (entry["dtype"], entry["bytes"]) == ("uint8", 2 * NUM_ITEMS)


@pytest.mark.parametrize("fmt", convert.FORMATS)
def test_uint16_codes_in_the_file(converters, tmp_path, fmt):
  spec, variables = _model(codebook_size=300)
  out = str(tmp_path / f"s{convert.EXTENSIONS[fmt]}")
  report = convert.export_file(out, spec, variables, fmt=fmt, k=5, sessions=_sessions(5))
  assert report["verification"]["different"] == 0
  # LiteRT has no uint16 gather: the .tflite holds the same 16 bits as int16.
  assert _codes_entry(report)["dtype"] == ("int16" if fmt == "litert" else "uint16")
  assert _codes_entry(report)["bytes"] == 2 * 2 * NUM_ITEMS


@pytest.mark.parametrize("fmt", convert.FORMATS)
@pytest.mark.parametrize("embedding", ["table", "tt"])
def test_teacher_and_tt_files_batch_variant(converters, tmp_path, fmt, embedding):
  spec, variables = _model(embedding, readout="last")
  out = str(tmp_path / f"m{convert.EXTENSIONS[fmt]}")
  sessions = _sessions(9)
  report = convert.export_file(out, spec, variables, fmt=fmt, k=5, batch=4, sessions=sessions)
  assert report["verification"]["different"] == 0 and report["verification"]["sessions"] == 9
  ids, scores = convert.load_runner(out)(graph.pack_sessions(sessions[:4], MAX_LEN))
  assert ids.shape == scores.shape == (4, 5) and ids.dtype == np.int32
  if embedding == "table":  # the table is stored once, float32, rows 1..V
    (table,) = [t for t in convert.tensor_table(out) if NUM_ITEMS in t["shape"]]
    assert table["dtype"] == "float32" and table["bytes"] == NUM_ITEMS * 8 * 4


def test_a_mismatch_fails_the_export_and_keeps_the_file(converters, tmp_path, monkeypatch):
  spec, variables = _model()
  out = str(tmp_path / "student.tflite")
  flax_scores = graph.flax_scores

  def negated(spec, variables):  # a reference that disagrees on every session
    run = flax_scores(spec, variables)
    return lambda items: run(items) * np.r_[1.0, -np.ones(NUM_ITEMS)].astype(np.float32)

  monkeypatch.setattr(graph, "flax_scores", negated)
  with pytest.raises(convert.VerificationError, match=r"on 3 of 3 sessions.*\[0, 1, 2\]"):
    convert.export_file(out, spec, variables, fmt="litert", k=5, sessions=_sessions(3))
  assert not os.path.exists(out) and not os.path.exists(convert.ids_path(out))
  assert os.path.exists(str(tmp_path / "student.unverified.tflite"))


def test_export_file_refuses_a_wrong_extension_or_existing_file(converters, tmp_path):
  spec, variables = _model()
  with pytest.raises(ValueError, match="writes a .onnx file"):
    convert.export_file(str(tmp_path / "m.tflite"), spec, variables, fmt="onnx")
  (tmp_path / "m.onnx").write_bytes(b"old")
  with pytest.raises(FileExistsError):
    convert.export_file(str(tmp_path / "m.onnx"), spec, variables, fmt="onnx")


# ---------------------------------------------------------------------------- tiny config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  from ccrec.workflow import pipeline

  from helpers import tiny

  workdir = str(tmp_path_factory.mktemp("tiny"))
  return workdir, pipeline.run(tiny(), workdir)


@pytest.mark.parametrize("fmt", convert.FORMATS)
def test_launch_export_of_the_tiny_config(converters, tiny_run, tmp_path, fmt):
  """launch/export.py --format=...: student and teacher, every test session verified."""
  workdir, metrics = tiny_run
  for model in ("student", "teacher"):
    out = str(tmp_path / f"{model}{convert.EXTENSIONS[fmt]}")
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "launch", "export.py"),
            f"--workdir={workdir}",
            f"--format={fmt}",
            f"--model={model}",
            f"--output={out}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.load(open(convert.ids_path(out)))["export"]
    check = report["verification"]
    assert check["sessions"] == metrics[f"{model}/test/count"]
    assert check["different"] == 0
    assert report["kind"] == ("codes" if model == "student" else "table")


@pytest.mark.slow
def test_launch_export_of_a_tiny_gru4rec_workdir(converters, tmp_path):
  """A trained gru4rec workdir (the whole pipeline) -> launch/export.py: the bundle (checked
  against the Flax model at export, its runtime metrics the training report's) and the
  LiteRT and ONNX files of the student, every test session verified."""
  from ccrec.serving import bundle as bundle_lib
  from ccrec.workflow import pipeline

  from helpers import tiny

  workdir = str(tmp_path / "gru")
  config = tiny(**{"model.encoder": "gru4rec", "model.gru_hidden": 24, "model.readout": "last"})
  metrics = pipeline.run(config, workdir)
  count = metrics["student/test/count"]

  def export(*flags):
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "export.py"), f"--workdir={workdir}", *flags],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )

  export(f"--output={tmp_path / 'bundle'}")
  manifest, _ = bundle_lib.read_bundle(str(tmp_path / "bundle"))
  assert manifest["config"]["encoder"] == "gru4rec" and manifest["config"]["gru_hidden"] == 24
  check = manifest["verification"]
  assert check["examples"] == count and check["different"] == 0
  assert manifest["metrics"]["runtime/test/NDCG@10"] == pytest.approx(
      metrics["student/test/NDCG@10"], abs=1e-6
  )
  for fmt in convert.FORMATS:
    out = str(tmp_path / f"student{convert.EXTENSIONS[fmt]}")
    export(f"--format={fmt}", f"--output={out}")
    report = json.load(open(convert.ids_path(out)))["export"]
    assert report["verification"]["sessions"] == count
    assert report["verification"]["different"] == 0
    assert [t["dtype"] for t in report["code_tensors"]] == ["uint8"]
