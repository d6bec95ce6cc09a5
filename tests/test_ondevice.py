"""A tiny run of the on-device benchmark: structure of its results and markdown (never timings)."""

import pytest

from ccrec.benchmarks import ondevice as benchmark


def test_benchmark_structure():
  assert benchmark.cases_from([300, 10], [8], 2, 16, 2)[1] == benchmark.Case(10, 8, 2, 16, 2)
  cases = [benchmark.Case(300, 8, 2, 16, 2, max_len=6, num_blocks=1, k=5)]
  result = benchmark.run(
      cases, batch=3, repeats=1, batch_repeats=1, use_jax=True, bundle_sizes=True
  )
  assert set(result) >= {"machine", "date", "results", "peak_rss_bytes", "seconds"}
  (res,) = result["results"]
  methods = {(r["method"], r["batch"]) for r in res["rows"]}
  assert methods == {(m, b) for m in benchmark.METHODS for b in (1, 3)}
  for row in res["rows"]:
    assert row["median_ms"] > 0 and row["min_ms"] <= row["median_ms"]
    assert (row["peak_bytes"] is None) == (row["method"] == "student_codes_jax")
  sizes = res["sizes"]
  assert sizes["table_bytes"] == 301 * 8 * 4
  assert sizes["student_bytes"] == 2 * 301 + 2 * 16 * 8 * 4
  assert set(res["bundle_bytes"]) == {
      "student (fp32 codebooks)",
      "student (int8 codebooks)",
      "teacher",
      "tt",
  }
  assert (
      res["bundle_bytes"]["student (int8 codebooks)"]
      < res["bundle_bytes"]["student (fp32 codebooks)"]
  )
  (target,) = benchmark.targets(result)
  assert not target["headline"]
  assert target["fp32 table / student bytes"] == pytest.approx(
      (301 * 8 * 4) / (2 * 301 + 2 * 16 * 8 * 4)
  )
  text = benchmark.markdown(result, command="python launch/benchmark.py --x")
  assert "`python launch/benchmark.py --x`" in text and result["machine"]["cpu"] in text
  assert text.count("| 300 | 8 |") == 2 * len(benchmark.METHODS) + 1  # rows + bundle sizes
  assert "Targets" in text


def test_parse_catalogs():
  assert benchmark.parse_catalogs("all") == [1682, 40_000, 1_000_000]
  assert benchmark.parse_catalogs("ml-100k,5000,1_000") == [1682, 5000, 1000]
  with pytest.raises(ValueError, match="huge"):
    benchmark.parse_catalogs("huge")
