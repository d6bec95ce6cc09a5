"""The notebooks run headlessly in smoke mode and produce tables and figures holding numbers.

All three share one run directory, as they do by default, so the teacher, codes and
pre-trained student of the tiny config are trained once.
"""

import json
import math
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("notebook_runs"))
  saved = {
      k: os.environ.get(k)
      for k in (
          "CCREC_NOTEBOOK_MODE",
          "CCREC_RUNS",
          "CCREC_FIGURES",
          "CCREC_EPOCHS_CAP",
          "CCREC_CODES_STEPS_CAP",
      )
  }
  os.environ.update(CCREC_NOTEBOOK_MODE="smoke", CCREC_RUNS=path)
  for k in ("CCREC_FIGURES", "CCREC_EPOCHS_CAP", "CCREC_CODES_STEPS_CAP"):
    os.environ.pop(k, None)
  yield path
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


def execute(name: str) -> nbformat.NotebookNode:
  nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
  NotebookClient(
      nb,
      timeout=1800,
      kernel_name="python3",
      resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}},
  ).execute()
  return nb


def outputs(nb, mime: str) -> list:
  return [
      o["data"][mime]
      for c in nb.cells
      if c.cell_type == "code"
      for o in c.get("outputs", [])
      if o.get("output_type") in ("display_data", "execute_result") and mime in o["data"]
  ]


def check_table(figures: str, name: str, keys: list[str], rows: int) -> list[dict]:
  with open(os.path.join(figures, name + ".json")) as f:
    summary = json.load(f)
  assert len(summary) == rows, [e["variant"] for e in summary]
  for entry in summary:
    for key in keys:
      value = entry[f"{key}/mean"]
      assert math.isfinite(value) and 0.0 <= value <= 1.0, (entry["variant"], key, value)
  with open(os.path.join(figures, name + ".md")) as f:
    assert f.read().count("\n") == rows + 2
  return summary


def check_png(figures: str, name: str):
  with open(os.path.join(figures, name + ".png"), "rb") as f:
    assert f.read(8) == PNG


def test_no_model_code_in_cells():
  for name in ("ablations.ipynb", "compression.ipynb", "sensitivity.ipynb"):
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for banned in ("def ", "class ", "import jax", "import flax", "nn.Module", "optax"):
      assert banned not in source, (name, banned)
    assert 'MODE = os.environ.get("CCREC_NOTEBOOK_MODE", "smoke")' in source


@pytest.mark.slow
def test_ablations_notebook(runs):
  nb = execute("ablations.ipynb")
  figures = os.path.join(runs, "smoke", "figures")
  summary = check_table(figures, "components", ["student/test/NDCG@10", "student/test/HR@10"], 2)
  assert [e["variant"] for e in summary] == ["full", "base"]
  check_png(figures, "components")
  assert outputs(nb, "image/png") and any(
      "±" in t or "|" in t for t in outputs(nb, "text/markdown")
  )


@pytest.mark.slow
def test_compression_notebook(runs):
  nb = execute("compression.ipynb")
  figures = os.path.join(runs, "smoke", "figures")
  cells = check_table(figures, "compression", ["student/test/NDCG@10"], 2)
  tables = []
  for e in cells:
    assert e["student/compression/paper_ratio/mean"] > 1.0
    # bytes CR = the fp32 table's bytes / the cell's compressed bytes; the table is the
    # same in every cell (same catalog, same d), so ratio x bytes must agree across cells.
    tables.append(
        e["student/compression/bytes_ratio/mean"] * e["student/compression/compressed_bytes/mean"]
    )
  assert tables[0] > max(e["student/compression/compressed_bytes/mean"] for e in cells)
  assert tables == pytest.approx([tables[0]] * len(tables), rel=1e-6)
  main = check_table(figures, "compression_main", ["student/test/NDCG@10"], 3)
  assert [e["variant"] for e in main] == ["teacher", "OD-Rec (TT)", "student (EODRec)"]
  for png in ("compression", "compression_usage"):
    check_png(figures, png)
  assert len(outputs(nb, "image/png")) == 2


@pytest.mark.slow
def test_sensitivity_notebook(runs):
  nb = execute("sensitivity.ipynb")
  figures = os.path.join(runs, "smoke", "figures")
  summary = check_table(figures, "sensitivity", ["student/test/NDCG@10"], 4)
  assert {e["variant"] for e in summary} == {"beta=0.01", "beta=1.0", "gamma=0.3", "eta=0.8"}
  check_png(figures, "sensitivity")
  assert outputs(nb, "image/png")
