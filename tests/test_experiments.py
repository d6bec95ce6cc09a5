"""ccrec.workflow.experiments on the tiny config: result caching, stage reuse across variants,
tables."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from ccrec.checkpoint import Checkpointer
from ccrec.workflow import experiments as ex
from ccrec.workflow import pipeline
from ccrec.workflow.workdir import WorkdirError


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
  """'full' trains every stage; 'base' (no distillation) must reuse all of them."""
  root = str(tmp_path_factory.mktemp("grid"))
  base = ex.base_config("smoke")
  rows = ex.run_grid(base, {"full": {}, "base": {"distill.enabled": False}}, [base.seed], root)
  return base, root, {r["variant"]: r for r in rows}


def _drop_saved_field(workdir, section, field):
  """Rewrites WORKDIR/config.json as written before config.`section`.`field` existed."""
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    saved = json.load(f)
  del saved[section][field]
  with open(path, "w") as f:
    json.dump(saved, f)


def _stages_logged(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {json.loads(line)["stage"] for line in f}


@pytest.mark.slow
def test_grid_rows_hold_metrics_and_result_json(grid_runs):
  base, root, rows = grid_runs
  assert rows["full"]["workdir"] == os.path.join(root, "default", "seed0")
  assert rows["base"]["workdir"] == os.path.join(root, "distill.enabled=False", "seed0")
  for row in rows.values():
    # Trained, not random: a random ranking's HR@10 is 10 / items.
    assert row["student/test/HR@10"] > 3 * 10 / base.data.synthetic_items
    assert row["student/compression/paper_ratio"] > 1.0
    with open(os.path.join(row["workdir"], ex.RESULT)) as f:
      assert json.load(f)["student/test/NDCG@10"] == row["student/test/NDCG@10"]


@pytest.mark.slow
def test_second_call_returns_cached_result_without_training(grid_runs, monkeypatch):
  base, _, rows = grid_runs
  workdir = rows["full"]["workdir"]
  log_size = os.path.getsize(os.path.join(workdir, "metrics.jsonl"))

  def no_training(*args, **kwargs):
    raise AssertionError("pipeline.run called for a cached variant")

  monkeypatch.setattr(pipeline, "run", no_training)
  again = ex.run_variant(ex.apply(base, {"seed": base.seed}), workdir)
  assert again == ex.read_result(workdir)
  assert all(rows["full"][k] == v for k, v in again.items())
  assert os.path.getsize(os.path.join(workdir, "metrics.jsonl")) == log_size


@pytest.mark.slow
def test_damaged_result_json_is_written_again_from_the_checkpoints(grid_runs, tmp_path):
  base, _, rows = grid_runs
  workdir = str(tmp_path / "copy")
  shutil.copytree(rows["full"]["workdir"], workdir)
  with open(os.path.join(workdir, ex.RESULT), "w") as f:
    f.write('{"student/test/NDCG@10": 0.1')  # an interrupted write
  assert ex.read_result(workdir) is None

  def trained():
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return [line for line in f if json.loads(line)["stage"] != "final"]

  before = trained()
  again = ex.run_variant(ex.apply(base, {"seed": base.seed}), workdir)
  assert again["student/test/NDCG@10"] == pytest.approx(rows["full"]["student/test/NDCG@10"])
  assert ex.read_result(workdir) == again
  assert trained() == before  # evaluated again, nothing retrained


@pytest.mark.slow
def test_cached_workdir_still_refuses_another_config(grid_runs):
  base, _, rows = grid_runs
  with pytest.raises(WorkdirError, match="distill.beta"):
    ex.run_variant(ex.apply(base, {"distill.beta": 0.5}), rows["full"]["workdir"])


@pytest.mark.slow
def test_variant_reuses_the_base_teacher_codes_and_pretrained_student(grid_runs):
  _, _, rows = grid_runs
  full, variant = rows["full"]["workdir"], rows["base"]["workdir"]
  for stage in ("teacher", "student_pretrain"):
    step = Checkpointer(os.path.join(variant, stage)).latest_step()
    assert step is not None and step == Checkpointer(os.path.join(full, stage)).latest_step()
  with (
      np.load(os.path.join(full, "codes", "codes.npz")) as a,
      np.load(os.path.join(variant, "codes", "codes.npz")) as b,
  ):
    np.testing.assert_array_equal(a["codes"], b["codes"])
  # The variant trained nothing itself: its log holds no training stage, only the report.
  assert _stages_logged(variant) == {"final"}
  assert {"teacher", "codes", "student_pretrain", "distill"} <= _stages_logged(full)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            {"distill.beta": 0.5, "distill.contrastive": False},
            ["teacher", "codes", "student_pretrain"],
        ),
        ({"student.eta": 0.5}, ["teacher", "codes"]),
        ({"codes.codebook_size": 4}, ["teacher"]),
        ({"model.d": 8}, []),
        ({"seed": 1}, []),
    ],
)
def test_reuse_only_copies_stages_with_equal_inputs(grid_runs, tmp_path, overrides, expected):
  base, root, _ = grid_runs
  workdir = str(tmp_path / "variant")
  copied = ex.reuse_stages(ex.apply(base, overrides), workdir, root)
  assert copied == expected
  if expected:
    assert sorted(os.listdir(workdir)) == sorted(expected)
  else:
    assert not os.path.exists(workdir)


@pytest.mark.slow
def test_donor_older_than_a_config_field_is_reused_while_the_field_keeps_its_default(
    grid_runs, tmp_path
):
  base, _, rows = grid_runs
  root = str(tmp_path / "root")
  donor = os.path.join(root, "default", "seed0")
  shutil.copytree(rows["full"]["workdir"], donor)
  _drop_saved_field(donor, "train", "label_smoothing")
  variant = ex.apply(base, {"distill.beta": 0.5})
  assert ex.reuse_stages(variant, str(tmp_path / "a"), root) == [
      "teacher",
      "codes",
      "student_pretrain",
  ]
  smoothed = ex.apply(base, {"train.label_smoothing": 0.1})  # the donor trained without it
  assert ex.reuse_stages(smoothed, str(tmp_path / "b"), root) == []


@pytest.mark.slow
def test_stage_not_run_by_the_variant_is_not_copied(grid_runs, tmp_path):
  base, root, _ = grid_runs
  tt = ex.apply(base, {"student.embedding": "tt", "distill.beta": 0.5})
  assert ex.reuse_stages(tt, str(tmp_path / "tt"), root) == ["teacher"]
  teacher_only = ex.apply(base, ex.TEACHER)
  assert ex.reuse_stages(teacher_only, str(tmp_path / "t"), root) == ["teacher"]


def test_apply_slug_and_caps():
  base = ex.base_config("smoke")
  assert ex.slug({"codes.num_codebooks": base.codes.num_codebooks}, base) == "default"
  assert (
      ex.slug({"distill.beta": 1.0, "codes.codebook_size": 4}, base)
      == "codes.codebook_size=4+distill.beta=1.0"
  )
  assert ex.slug(ex.TEACHER, base) == "stages=teacher"
  with pytest.raises(KeyError, match="betta"):
    ex.apply(base, {"distill.betta": 1.0})
  with pytest.raises(ValueError, match="student.eta"):
    ex.apply(base, {"student.eta": 2.0})
  capped = ex.base_config("full", epochs_cap=3, codes_steps_cap=100)
  assert (
      capped.train.epochs,
      capped.student.pretrain_epochs,
      capped.distill.epochs,
      capped.codes.max_steps,
  ) == (3, 3, 3, 100)
  assert capped.data.dataset == "ml-100k"
  assert ex.runs_root("r", "full", 3, 100) == os.path.join("r", "full-cap3-codes100")
  assert ex.runs_root("r", "full") == os.path.join("r", "full")


def test_base_config_overrides_and_their_run_root():
  overrides = ex.parse_overrides(
      [
          "distill.batch_size=8",
          "model.readout=soft_attention",
          "stages=('teacher', 'codes')",
          "distill.beta=0.5",
      ]
  )
  assert overrides == {
      "distill.batch_size": 8,
      "model.readout": "soft_attention",
      "stages": ("teacher", "codes"),
      "distill.beta": 0.5,
  }
  c = ex.setup("smoke", "r", overrides={"distill.batch_size": 8, "distill.beta": 0.5})[0]
  assert (c.distill.batch_size, c.distill.beta) == (8, 0.5)
  assert c.train.batch_size == ex.base_config("smoke").train.batch_size  # the rest unchanged
  # Another base config is another run directory; the overrides' order does not matter.
  assert ex.runs_root("r", "full", 3, 0, {"distill.batch_size": 0, "model.d": 32}) == os.path.join(
      "r", "full-cap3-set-distill.batch_size=0+model.d=32"
  )
  assert ex.runs_root(
      "r", "full", overrides={"model.d": 32, "distill.batch_size": 0}
  ) == os.path.join("r", "full-set-distill.batch_size=0+model.d=32")
  for bad in (["distill.batch_size"], ["=3"]):
    with pytest.raises(ValueError, match="FIELD=VALUE"):
      ex.parse_overrides(bad)
  with pytest.raises(KeyError, match="distil"):
    ex.setup("smoke", "r", overrides={"distil.beta": 1.0})
  with pytest.raises(ValueError, match="distill.batch_size"):
    ex.setup("smoke", "r", overrides={"distill.batch_size": -1})


def test_setup_places_runs_and_tables_by_the_base_config():
  base, root, out = ex.setup("full", "r")
  assert root == os.path.join("r", "full") and out == os.path.join(ex.ROOT, "results")
  assert base.distill.batch_size == 32  # configs/eodrec.py
  # An override equal to the base's value is no other experiment: same directory, same out.
  assert ex.setup("full", "r", overrides={"distill.batch_size": 32})[1:] == (root, out)
  base, root, out = ex.setup(
      "full", "r", overrides={"distill.batch_size": 0, "data.data_dir": "/tmp/d"}
  )
  assert base.distill.batch_size == 0 and base.data.data_dir == "/tmp/d"
  assert root == os.path.join("r", "full-set-data.data_dir=_tmp_d+distill.batch_size=0")
  assert out == os.path.join(root, "figures")  # never results/: not the method config
  assert ex.setup("full", "r", epochs_cap=3)[2] == os.path.join("r", "full-cap3", "figures")
  assert ex.setup("full", "r", out="elsewhere")[2] == "elsewhere"
  assert ex.setup("smoke", "r")[2] == os.path.join("r", "smoke", "figures")


def test_grids():
  assert list(ex.grid("components", "full")) == ["full", "base", "w/o-c", "w/o-b", "w/o-s", "w/o-m"]
  assert len(ex.grid("components", "smoke")) == 2
  full = ex.grid("compression", "full")
  assert {"M=1,K=32", "M=5,K=32", "M=4,K=256", "M=3,K=256", "teacher", "TT"} <= set(full)
  assert len(full) == 8 + 2
  sens = ex.grid("sensitivity", "full")
  assert len(sens) == 15 + 1 and sens["beta=0.001"] == {"distill.beta": 0.001}
  for name in ("components", "compression", "sensitivity"):
    for mode in ex.MODES:
      for overrides in ex.grid(name, mode).values():
        ex.apply(ex.base_config(mode), overrides)  # every variant is a valid config


def test_select_variants_joins_names_split_on_commas():
  grid = ex.grid("compression", "full")
  picked = ex.select_variants(grid, "M=2,K=32,TT,M=4,K=256".split(","))
  assert list(picked) == ["M=2,K=32", "TT", "M=4,K=256"]
  assert picked["M=4,K=256"] == {"codes.num_codebooks": 4, "codes.codebook_size": 256}
  assert list(ex.select_variants(ex.grid("components", "full"), ["w/o-c", "base"])) == [
      "w/o-c",
      "base",
  ]
  for bad in (["M=2,K=33"], ["M=2"], ["full"], ["TT", "nope"]):
    with pytest.raises(ValueError, match="unknown variant"):
      ex.select_variants(grid, ",".join(bad).split(","))


def test_summarize_mean_sd_and_markdown():
  rows = [
      {"variant": "a", "seed": s, "workdir": "w", "overrides": {}, "m": v}
      for s, v in enumerate((0.1, 0.2, 0.3))
  ] + [{"variant": "b", "seed": 0, "workdir": "w", "overrides": {}, "m": 0.5}]
  summary = ex.summarize(rows, ["m"])
  assert [e["variant"] for e in summary] == ["a", "b"]
  assert summary[0]["n"] == 3
  assert summary[0]["m/mean"] == pytest.approx(0.2)
  assert summary[0]["m/sd"] == pytest.approx(0.1)
  assert math.isnan(summary[1]["m/sd"])
  table = ex.markdown_table(summary, {"m": "M"}, percent=["m"])
  assert "| a | 3 | 20.00 ± 10.00 |" in table
  assert "| b | 1 | 50.00 |" in table


def test_cached_result_of_a_run_older_than_a_config_field(tmp_path):
  """A finished run saved before a field existed reports while the field keeps its default;
  a non-default value of it is another experiment (the old run behaved as the default)."""
  base = ex.base_config("smoke")
  plain = ex.apply(base, {"distill.batch_size": 0})
  workdir = str(tmp_path / "old")
  from ccrec.workflow import workdir as workdir_lib

  workdir_lib.prepare(workdir, plain)
  _drop_saved_field(workdir, "distill", "batch_size")
  assert ex.read_cached(plain, workdir) is None  # no result.json yet
  with open(os.path.join(workdir, ex.RESULT), "w") as f:
    json.dump({"student/test/NDCG@10": 0.5}, f)
  assert ex.read_cached(plain, workdir) == {"student/test/NDCG@10": 0.5}
  with pytest.raises(WorkdirError, match=r"distill.batch_size: saved None vs now 16"):
    ex.read_cached(ex.apply(base, {"distill.batch_size": 16}), workdir)
  with pytest.raises(WorkdirError, match=r"distill.beta"):
    ex.read_cached(ex.apply(plain, {"distill.beta": 0.5}), workdir)
