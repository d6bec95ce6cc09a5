r"""Exact pruned top-k against the full scan, on codes learned by the codes stage.

  nice -n 10 python launch/benchmark_pruned.py --config=configs/synthetic_1m.py \
      --config.model.d=256 --num_items=1000000 --k=20 --queries=100

Learns codes (the config's M, K and codes settings) from a structured item table of V
rows (latent groups plus noise, as trained tables look; ccrec/benchmarks/scale.py), then
times one session at a time through the numpy runtime's scorers: the full scan
(`CodeScorer`) and the pruned search (`PrunedIndex`), on noisy item embeddings as
session vectors, and checks that every query gets identical ids and scores. The report
goes to --output (markdown) and --json.
"""

import datetime
import json
import shlex
import sys

import _errors
from absl import flags, logging
from ml_collections import config_flags

from ccrec.benchmarks import ondevice, scale

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic_1m.py", "Config file.")
_ITEMS = flags.DEFINE_integer("num_items", 1_000_000, "Catalog size V.")
_K = flags.DEFINE_integer("k", 20, "Top-k.")
_QUERIES = flags.DEFINE_integer("queries", 100, "Sessions timed, one at a time.")
_OUTPUT = flags.DEFINE_string("output", "docs/bench_pruned.md", "Markdown report.")
_JSON = flags.DEFINE_string("json", "docs/bench_pruned.json", "JSON report ('' skips).")


def markdown(result: dict, command: str) -> str:
  r, stage = result["result"], result["result"]["codes_stage"]
  ms = lambda x: f"{1e3 * x:.2f}"  # noqa: E731
  return "\n".join(
      [
          "# Pruned exact top-k on learned codes",
          "",
          "```",
          command,
          "```",
          "",
          f"Measured {result['date']} on {result['machine']['cpu']} "
          f"({result['machine']['cores']} cores), one process, numpy.",
          "",
          f"V = {r['num_items']:,}, d = {r['d']}, M = {r['num_codebooks']}, "
          f"K = {r['codebook_size']}, top-{r['k']}, {r['queries']} sessions one at a time. "
          f"Codes learned by the codes stage ({stage['gumbel_steps']} Gumbel-softmax steps "
          f"to early stop, {stage['refine_iterations']} refinement iterations; relative "
          f"reconstruction mse {stage['final_relative_mse']:.3f}, "
          f"{stage['collisions']} shared codes; its time is the scaling table's).",
          "",
          "| | median ms | mean ms | p95 ms |",
          "|---|---|---|---|",
          f"| full scan | {ms(r['full_scan_s_median'])} | {ms(r['full_scan_s_per_query'])} | "
          f"{ms(r['full_scan_s_p95'])} |",
          f"| pruned | {ms(r['pruned_s_median'])} | {ms(r['pruned_s_per_query'])} | "
          f"{ms(r['pruned_s_p95'])} |",
          "",
          f"Identical ids and scores to the full scan on every query: {r['identical']}. "
          f"Share of the catalog the pruned search scored: {r['mean_share_scored']:.4f} "
          f"(mean). Index build: {r['index_build_s']:.2f} s.",
          "",
      ]
  )


def main(argv):
  del argv
  start = datetime.datetime.now(datetime.timezone.utc)
  result = {
      "date": start.isoformat(timespec="seconds"),
      "machine": ondevice.machine(),
      "result": scale.measure_pruned_learned(
          _CONFIG.value, _ITEMS.value, k=_K.value, queries=_QUERIES.value
      ),
  }
  command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
  logging.info("%s", json.dumps(result["result"], default=str))
  with open(_OUTPUT.value, "w") as f:
    f.write(markdown(result, command))
  print(_OUTPUT.value)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=1, default=str)
    print(_JSON.value)


if __name__ == "__main__":
  _errors.run(main)
