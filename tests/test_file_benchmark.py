"""A smoke run of the exported-file benchmark: structure of its rows, targets, markdown (never
timings). Skips unless the export extra is installed."""

import math

import pytest

from ccrec.benchmarks import files as file_benchmark
from ccrec.serving import export


def test_file_benchmark_smoke(tmp_path):
  for module in ("litert_converter", "ai_edge_litert", "jax2onnx", "onnxruntime"):
    pytest.importorskip(module, reason="the export extra is not installed")
  case = file_benchmark.Case(
      120, d=8, codebooks=((2, 16),), tt_rank=2, max_len=5, num_blocks=1, k=5
  )
  res = file_benchmark.run_case(
      case,
      batch=3,
      repeats=2,
      batch_repeats=1,
      directory=str(tmp_path),
      only_models=("student", "student_unpaired", "teacher"),
      runtimes=("litert_xnnpack", "onnxruntime", "numpy"),
  )
  got = {(r["model"], r["format"], r["runtime"], r["batch"]) for r in res["rows"]}
  want = {
      (m, f, r, b)
      for m in ("student", "teacher")
      for b in (1, 3)
      for f, r in (("litert", "litert_xnnpack"), ("onnx", "onnxruntime"), ("bundle", "numpy"))
  } | {
      ("student_unpaired", f, r, b)
      for b in (1, 3)
      for f, r in (("litert", "litert_xnnpack"), ("onnx", "onnxruntime"))  # no bundle
  }
  assert got == want
  for row in res["rows"]:
    assert "error" not in row, row
    assert row["repeats"] == (2 if row["batch"] == 1 else 1)
    assert 0 < row["median_ms"] <= row["p95_ms"] and row["peak_bytes"] >= 0
    assert row["file_bytes"] > 0
  student = [r for r in res["rows"] if r["model"] == "student" and r["format"] == "litert"]
  config = file_benchmark.models(case)[0]["config"]
  layout = export.bundle_layout(export.spec_from_config(config))
  encoder = sum(
      math.prod(shape) * dtype.itemsize
      for name, (shape, dtype) in layout.items()
      if not name.startswith("items/")
  )
  assert student[0]["array_bytes"] == 2 * 120 + 2 * 16 * 8 * 4 + encoder  # uint8 codes
  result = {
      "machine": {
          "cpu": "x",
          "cores": 1,
          "load_avg": [0.0],
          "load_avg_end": [0.0],
          "versions": {"jax": "0"},
      },
      "date": "d",
      "seconds": 1.0,
      "results": [res],
  }
  (target,) = file_benchmark.targets(result)
  assert (target["M"], target["K"]) == (2, 16)
  unpaired = [
      r for r in res["rows"] if r["model"] == "student_unpaired" and r["format"] == "litert"
  ]
  assert unpaired[0]["file_bytes"] > student[0]["file_bytes"]  # K = 16: a pair in one byte
  assert target["unpaired / paired time"] == pytest.approx(
      unpaired[0]["median_ms"] / student[0]["median_ms"]
  )
  assert target["teacher / student bytes"] == pytest.approx(
      [r for r in res["rows"] if r["model"] == "teacher" and r["format"] == "litert"][0][
          "file_bytes"
      ]
      / student[0]["file_bytes"]
  )
  text = file_benchmark.markdown(result, command="python launch/benchmark_export.py --x")
  assert "`python launch/benchmark_export.py --x`" in text
  assert text.count("| 120 | 8 |") == len(res["rows"]) + 1  # rows + the targets row
