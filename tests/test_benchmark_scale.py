"""The scaling benchmark (ccrec/benchmarks/scale.py) end to end at two tiny catalogs.

Structure only: no timing is asserted (the numbers belong to the machine).
"""

import json
import os

import numpy as np

from ccrec import config as config_lib
from ccrec.benchmarks import scale


def _tiny_config():
  c = config_lib.base_config()
  c.model.d = 8
  c.data.max_len = 6
  c.train.batch_size = 8
  c.train.num_negatives = 16
  c.eval.batch_size = 16
  c.codes.codebook_size = 8
  c.codes.num_codebooks = 2
  c.codes.batch_size = 16
  c.codes.max_steps = 4
  c.codes.eval_every = 2
  c.codes.refine_iterations = 2
  return c


def test_structured_table_and_batches():
  table = scale.structured_table(100, 4, num_groups=5)
  assert table.shape == (101, 4) and table.dtype == np.float32 and not table[0].any()
  counts = scale.zipf_counts(50)
  assert counts.shape == (51,) and counts[0] == 0 and counts[1:].min() >= 1
  batch = next(scale.random_batches(50, 4, 6, counts))
  assert batch["items"].shape == (4, 6) and batch["target"].shape == (4,)
  assert batch["items"].max() <= 50 and batch["target"].min() >= 1
  assert batch["items"][:, 0].min() >= 1  # every prefix has an item


def test_run_and_report_at_two_tiny_catalogs(tmp_path):
  c = _tiny_config()
  result = scale.run(
      c,
      [40, 90],
      steps=1,
      warmup=1,
      eval_examples=16,
      queries=1,
      only=["train/teacher/sampled", "codes", "eval", "scoring"],
      isolate=False,
  )
  assert [r["num_items"] for r in result["rows"]] == [40, 90]
  for row in result["rows"]:
    assert row["bytes"]["teacher"] == (row["num_items"] + 1) * 8 * 4
    assert row["train/teacher/sampled"]["seconds_per_epoch"] > 0
    assert "train/teacher/full" not in row  # not asked for
    assert row["codes"]["seconds"]["total"] > 0 and row["codes"]["unresolved"] >= 0
    assert row["eval"]["test_examples"] >= 1 and row["scoring"]["identical"]
    assert all(
        r["peak_rss_bytes"] > 0 for r in row.values() if isinstance(r, dict) and "wall_s" in r
    )
  exps = scale.fit(result)
  assert set(exps) == {label for label, _, _ in scale.columns()}
  assert exps["teacher items"] is not None and exps["teacher epoch (full)"] is None
  paths = scale.write(result, str(tmp_path), "python launch/benchmark_scale.py ...")
  assert [os.path.basename(p) for p in paths] == [
      "bench_scale.md",
      "bench_scale.json",
      "bench_scale.png",
  ]
  text = open(paths[0]).read()
  assert "| V=40 | V=90 | exponent |" in text and "codes stage" in text
  assert json.load(open(paths[1]))["exponents"]["teacher items"] > 0
  assert os.path.getsize(paths[2]) > 1000


def test_one_isolated_measurement():
  out = scale.run_isolated("scoring", _tiny_config(), 60, {"queries": 1})
  assert "error" not in out, out
  assert out["peak_rss_bytes"] > 0 and out["full_scan_s"] > 0
  assert "error" in scale.run_isolated("nothing", _tiny_config(), 60, {})


def test_pruned_on_learned_codes():
  c = _tiny_config()
  out = scale.measure_pruned_learned(c, 300, k=5, queries=3)
  assert out["identical"] and out["codes"] == "given"
  assert (out["num_items"], out["d"], out["num_codebooks"], out["codebook_size"], out["k"]) == (
      300,
      8,
      2,
      8,
      5,
  )
  assert out["codes_stage"]["gumbel_steps"] <= c.codes.max_steps
  assert out["pruned_s_median"] <= out["pruned_s_p95"]
