"""End to end on the tiny config: every stage, resume, workdir and checkpoint faults.

The tests that train (the module's `full_run` and the others that call `pipeline.run`
past validation) are marked slow; the fast tier keeps the config and workdir checks.
"""

import json
import os
import shutil

import jax
import numpy as np
import optax
import pytest

from ccrec import data as data_lib
from ccrec.checkpoint import Checkpointer, CheckpointError
from ccrec.models.build import build_models
from ccrec.models.recommender import init_variables
from ccrec.train.state import TrainState
from ccrec.workflow import pipeline
from ccrec.workflow.from_checkpoint import evaluate_workdir
from ccrec.workflow.workdir import WorkdirError

from helpers import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


OPTIMIZER_EPOCHS = []  # steps_per_epoch of every optimizer the full run builds, in order


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  make = pipeline.make_optimizer

  def recording(train_config, steps_per_epoch=1):
    OPTIMIZER_EPOCHS.append(steps_per_epoch)
    return make(train_config, steps_per_epoch)

  pipeline.make_optimizer = recording
  try:
    return workdir, pipeline.run(tiny(), workdir)
  finally:
    pipeline.make_optimizer = make


@pytest.mark.slow
def test_full_pipeline_reports_every_model_and_compression(full_run):
  workdir, metrics = full_run
  for model in ("teacher", "student", "student_mixed"):
    for split in ("valid", "test", "test_hot", "test_cold"):
      for k in (5, 10, 20):
        assert f"{model}/{split}/NDCG@{k}" in metrics
  # Two epochs learn at least the items' popularity: far above a random ranking's
  # HR@10 = 10/60 (test_tiny_teacher_beats_popularity trains long enough to beat that).
  dataset = pipeline.workdir_lib.load_data(tiny())
  for model in ("teacher", "student", "student_mixed"):
    assert metrics[f"{model}/test/HR@10"] > 3 * 10 / 60, model
  # Hot and cold targets partition the test split.
  assert (
      metrics["student/test_hot/count"] + metrics["student/test_cold/count"]
      == metrics["student/test/count"]
      == len(dataset.test.targets)
  )
  # Compressed-student figures: M=2, K=8, d=16, 60 items.
  assert metrics["student/compression/paper_ratio"] == pytest.approx(
      60 * 16 / (2 * 8 * 16 + 2 * 60)
  )
  assert metrics["student/compression/bytes_ratio"] > 1.0
  for stage in ("teacher", "codes", "student_pretrain", "distill"):
    assert os.path.isdir(os.path.join(workdir, stage)), stage
  with open(os.path.join(workdir, "codes", "report.json")) as f:
    codes_report = json.load(f)
  assert {"mse", "refit_mse", "mean_perplexity", "collisions"} <= set(codes_report)
  assert codes_report["refit_mse"] <= codes_report["mse"] * (1 + 1e-5)
  # codes.unique (default): every item gets its own full code (60 items, 64 codes;
  # with M=2, one- and two-codeword moves reach every other code).
  with np.load(os.path.join(workdir, "codes", "codes.npz")) as f:
    stored = f["codes"]
  assert len({tuple(c) for c in stored[1:]}) == 60
  assert codes_report["final_unresolved"] == 0 and codes_report["final_collisions"] == 0
  assert codes_report["final_unique_codes"] == 60
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  distill_terms = set().union(*(r.keys() for r in records if r["stage"] == "distill"))
  assert {"teacher/ce", "student/ce", "codes/mse", "kd/kl", "kd/infonce"} <= distill_terms
  # Each stage's epoch has the steps of its own batch size: the distillation stage
  # runs at distill.batch_size (16), the others at train.batch_size (32).
  c = tiny()
  dataset = pipeline.workdir_lib.load_data(c)
  steps = lambda b: data_lib.steps_per_epoch(dataset.train, "window", b, c.data.max_len)
  assert steps(16) > steps(32)
  first_eval = {}
  for r in records:
    if r.get("epoch") == 0 and "best" in r:
      first_eval.setdefault(r["stage"], r["step"])
  assert first_eval == {"teacher": steps(32), "student_pretrain": steps(32), "distill": steps(16)}
  # ... and so has its optimizer's epoch (train.lr_decay decays the rate once per epoch).
  assert OPTIMIZER_EPOCHS == [steps(32), steps(32), steps(16)]


@pytest.mark.slow
def test_a_rerun_gives_identical_metrics(full_run, tmp_path):
  # Every stage (teacher, codes, pre-training, distillation) draws its randomness from the
  # seed alone: a second run from scratch on the same machine reports the same numbers, bit
  # for bit, and logs the same training curve.
  workdir, metrics = full_run
  again = str(tmp_path / "again")
  assert pipeline.run(tiny(), again) == metrics
  with open(os.path.join(workdir, "codes", "report.json")) as f:
    with open(os.path.join(again, "codes", "report.json")) as g:
      assert json.load(f) == json.load(g)
  with np.load(os.path.join(workdir, "codes", "codes.npz")) as f:
    with np.load(os.path.join(again, "codes", "codes.npz")) as g:
      assert set(f) == set(g)
      for name in f:
        np.testing.assert_array_equal(f[name], g[name], err_msg=name)
  untimed = lambda records: [{k: v for k, v in r.items() if not _timing(k)} for r in records]
  assert untimed(_records(again)) == untimed(_records(workdir))


def _timing(key):
  return any(t in key for t in ("time", "seconds", "per_s", "elapsed"))


@pytest.mark.slow
def test_evaluate_from_checkpoint_matches_training_report(full_run):
  workdir, metrics = full_run
  evaluated = evaluate_workdir(workdir)
  assert os.path.exists(os.path.join(workdir, "eval.json"))
  for key in ("teacher/test/NDCG@10", "student/test/HR@20", "student_mixed/test/MRR@10"):
    assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6)


@pytest.mark.slow
def test_per_example_ranks_give_the_reported_metrics(full_run):
  from ccrec.evaluation import significance
  from ccrec.workflow.from_checkpoint import workdir_ranks

  workdir, metrics = full_run
  ranks, targets = workdir_ranks(workdir, ("teacher", "student"), "test")
  assert sorted(ranks) == ["student", "teacher"]
  for model, model_ranks in ranks.items():
    assert model_ranks.shape == targets.shape and model_ranks.dtype == np.int64
    for metric in ("NDCG@10", "HR@20", "MRR@5"):
      assert significance.per_example(model_ranks, metric).mean() == pytest.approx(
          metrics[f"{model}/test/{metric}"], abs=1e-6
      )
  with pytest.raises(ValueError, match="model must be one of"):
    workdir_ranks(workdir, ("student_mixed",))
  with pytest.raises(ValueError, match="split must be"):
    workdir_ranks(workdir, ("teacher",), "train")


@pytest.mark.slow
def test_ranks_before_distillation_are_the_models_those_stages_selected(full_run):
  # 'stage1_teacher' and 'pretrained_student' are the teacher and the student at the best
  # checkpoints of their own stages: on validation they score what those stages logged as
  # their best, not what the co-trained models score.
  from ccrec.evaluation import significance
  from ccrec.workflow.from_checkpoint import workdir_ranks

  workdir, _ = full_run
  models = ("stage1_teacher", "pretrained_student", "teacher", "student")
  ranks, _ = workdir_ranks(workdir, models, "valid")
  best = {r["stage"]: r["best"] for r in _records(workdir) if "best" in r}
  ndcg = {m: significance.per_example(ranks[m], "NDCG@10").mean() for m in models}
  assert ndcg["stage1_teacher"] == pytest.approx(best["teacher"], abs=1e-6)
  assert ndcg["pretrained_student"] == pytest.approx(best["student_pretrain"], abs=1e-6)
  assert ndcg["student"] == pytest.approx(best["distill"], abs=1e-6)  # distill selects on it
  assert not np.array_equal(ranks["teacher"], ranks["stage1_teacher"])
  assert not np.array_equal(ranks["student"], ranks["pretrained_student"])


@pytest.mark.slow
def test_compare_launcher_prints_the_paired_comparison(full_run):
  import subprocess
  import sys

  workdir, metrics = full_run
  cmd = [
      sys.executable,
      os.path.join(ROOT, "launch", "compare.py"),
      f"--a={workdir}:teacher",
      f"--b={workdir}:student",
      "--metrics=NDCG@10,HR@5",
      "--samples=200",
  ]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "orbax" not in done.stderr  # third-party INFO logs hidden by every launch script
  out = json.loads(done.stdout[done.stdout.index("{") :])
  assert out["split"] == "test" and out["n"] == metrics["teacher/test/count"]
  for metric in ("NDCG@10", "HR@5"):
    got = out[metric]
    assert got["mean_a"] == pytest.approx(metrics[f"teacher/test/{metric}"], abs=1e-6)
    assert got["mean_b"] == pytest.approx(metrics[f"student/test/{metric}"], abs=1e-6)
    teacher, student = (metrics[f"{m}/test/{metric}"] for m in ("teacher", "student"))
    assert got["diff"] == pytest.approx(student - teacher, abs=1e-6)
    assert got["ci_low"] <= got["diff"] <= got["ci_high"] and 0 < got["p_value"] <= 1
    assert got["ratio"] == pytest.approx(student / teacher, rel=1e-5)
  # Runs pooled: two runs of the same models average to the same models.
  two = subprocess.run(
      cmd[:2]
      + [f"--a={workdir}:teacher,{workdir}:teacher", f"--b={workdir}:student,{workdir}:student"]
      + cmd[4:]
      + ["--verbose_libs"],
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert two.returncode == 0, two.stderr[-3000:]
  assert "orbax" in two.stderr  # ... unless --verbose_libs
  pooled = json.loads(two.stdout[two.stdout.index("{") :])
  assert pooled["runs"] == 2 and out["runs"] == 1
  for metric in ("NDCG@10", "HR@5"):
    for k in ("mean_a", "mean_b", "diff", "ratio", "ci_low", "ratio_ci_high"):
      assert pooled[metric][k] == pytest.approx(out[metric][k], abs=1e-12)
  bad = subprocess.run(
      cmd[:2] + [f"--a={workdir}:teacher,{workdir}:teacher", f"--b={workdir}:student"],
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert bad.returncode != 0 and "give the same number" in bad.stderr
  bad = subprocess.run(
      cmd[:2] + [f"--a={workdir}:student_mixed", f"--b={workdir}:student"],
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert bad.returncode != 0 and "WORKDIR:MODEL" in bad.stderr
  bad = subprocess.run(cmd[:4] + ["--metrics=NDCG10"], capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "unknown metric 'NDCG10'" in bad.stderr


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_rerunning_a_finished_workdir_trains_nothing_more(full_run):
  workdir, metrics = full_run
  trained = [r for r in _records(workdir) if r["stage"] != "final"]
  again = pipeline.run(tiny(), workdir)
  assert again["student/test/NDCG@10"] == pytest.approx(metrics["student/test/NDCG@10"])
  after = _records(workdir)
  assert [r for r in after if r["stage"] != "final"] == trained  # no stage logged a step
  assert after[-1]["stage"] == "final"


@pytest.mark.slow
def test_export_workdir_bundle_agrees_with_the_trained_models(full_run, tmp_path):
  from ccrec.serving import bundle as bundle_lib
  from ccrec.workflow.export import export_workdir

  workdir, metrics = full_run
  for model in ("student", "teacher"):
    out = str(tmp_path / model)
    manifest = export_workdir(workdir, out, model=model)
    check = manifest["verification"]
    assert check["examples"] == metrics[f"{model}/test/count"]
    assert check["different"] == 0 and check["identical"] + check["tie_only"] == check["examples"]
    written, _ = bundle_lib.read_bundle(out)
    for k in ("NDCG@10", "HR@20"):  # the numpy runtime's own metrics = the training report's
      assert written["metrics"][f"runtime/test/{k}"] == pytest.approx(
          metrics[f"{model}/test/{k}"], abs=1e-6
      )
  with pytest.raises(ValueError, match="'student' or 'teacher'"):
    export_workdir(workdir, str(tmp_path / "x"), model="heads")


def _copy_without_eval(workdir, tmp_path):
  """A copy of a finished workdir without eval.json (so a refused evaluation writes none)."""
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  if os.path.exists(os.path.join(copy, "eval.json")):
    os.remove(os.path.join(copy, "eval.json"))
  return copy


@pytest.mark.slow
def test_dataset_differing_from_the_workdirs_is_refused(full_run, tmp_path):
  copy = _copy_without_eval(full_run[0], tmp_path)
  path = os.path.join(copy, "dataset.json")
  saved = json.load(open(path))
  json.dump({**saved, "num_items": saved["num_items"] + 1}, open(path, "w"))
  with pytest.raises(WorkdirError, match="differs from the one this workdir was trained on"):
    evaluate_workdir(copy)
  assert not os.path.exists(os.path.join(copy, "eval.json"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit,error",
    [
        # Same sizes, other contents (e.g. rebuilt from other clicks): the sha256 tells.
        (lambda saved: {**saved, "sha256": "0" * 64}, "sha256: saved '0000"),
        (lambda saved: "{truncated", "dataset.json is not valid JSON"),
        # A record without the sha256 cannot vouch for the contents.
        (lambda saved: {k: v for k, v in saved.items() if k != "sha256"}, "sha256: saved None"),
    ],
)
def test_dataset_record_checks(full_run, tmp_path, edit, error):
  workdir, _ = full_run
  copy = _copy_without_eval(workdir, tmp_path)
  path = os.path.join(copy, "dataset.json")
  with open(path) as f:
    saved = json.load(f)
  assert len(saved["sha256"]) == 64
  edited = edit(saved)
  with open(path, "w") as f:
    f.write(edited if isinstance(edited, str) else json.dumps(edited))
  with pytest.raises(WorkdirError, match=error):
    evaluate_workdir(copy)
  assert not os.path.exists(os.path.join(copy, "eval.json"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"codes.eval_every": 0}, "codes.eval_every"),
        ({"train.select_metric": "NDCG@11"}, "train.select_metric"),
        ({"stages": ("teacher", "distill")}, "stages"),
        ({"data.hot_fraction": 0.001}, "data.hot_fraction"),
        ({"data.dataset": "no-such-dataset"}, "no-such-dataset"),
        ({"train.rdrop": -1.0}, "train.rdrop"),
        ({"train.fused_chunk": -1}, "train.fused_chunk"),
        ({"train.length_bucket": -4}, "train.length_bucket"),
        ({"student.rdrop": -0.5}, "student.rdrop"),
        ({"codes.weight_power": -1.0}, "codes.weight_power"),
        (
            {"train.fused_chunk": 8, "train.rdrop": 1.0, "train.rdrop_detach": True},
            "train.fused_chunk",
        ),
    ],
)
def test_bad_config_or_data_fails_before_the_workdir_is_written(tmp_path, overrides, field):
  # Else the saved config.json would refuse the corrected command.
  workdir = str(tmp_path / "w")
  with pytest.raises(Exception, match=field.replace(".", r"\.")):
    pipeline.run(tiny(**overrides), workdir)
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  pipeline.run(tiny(**{"stages": ("teacher",), "train.epochs": 1}), workdir)  # the fix runs


@pytest.mark.slow
def test_every_stage_trains_on_length_bucketed_batches(tmp_path):
  # The teacher, the student and the distillation step (views, mixup, soft targets) on
  # batches cut to their longest window: one epoch of each runs and reports its models.
  c = tiny(**{"train.length_bucket": 4, "train.epochs": 1, "student.pretrain_epochs": 1})
  with c.unlocked():
    c.distill.epochs = 1
  metrics = pipeline.run(c, str(tmp_path / "w"))
  assert {"teacher/test/NDCG@10", "student/test/NDCG@10"} <= set(metrics)


@pytest.mark.slow
def test_popularity_weighted_codes_stage(full_run, tmp_path):
  from ccrec.train.code_refinement import popularity_weights
  from ccrec.workflow import codes_stage
  from ccrec.workflow.from_checkpoint import restore_trained

  source, _ = full_run
  workdir = str(tmp_path / "w")
  shutil.copytree(os.path.join(source, "teacher"), os.path.join(workdir, "teacher"))
  c = tiny(**{"stages": ("teacher", "codes"), "codes.weight_power": 1.0})
  pipeline.run(c, workdir)  # the same teacher, restored; codes learned with weights
  with open(os.path.join(workdir, "codes", "report.json")) as f:
    report = json.load(f)
  ctx = pipeline.make_context(c, workdir, check_workdir=False)
  teacher = restore_trained(ctx).teacher
  full = np.asarray(ctx.teacher.apply(teacher.variables(), method="table"))
  table = full[1:]
  with np.load(os.path.join(workdir, "codes", "codes.npz")) as f:
    codes, books = f["codes"][1:].astype(int), f["codebooks"]
  err = np.sum((books[0][codes[:, 0]] + books[1][codes[:, 1]] - table) ** 2, axis=1)
  w = popularity_weights(ctx.dataset.item_counts, 1.0)[1:]
  assert report["weighted"] and report["weight_power"] == 1.0
  assert report["final_mse"] == pytest.approx(np.sum(w * err) / np.sum(w), rel=1e-4)
  assert report["unweighted_mse"] == pytest.approx(err.mean(), rel=1e-4)
  assert report["final_collisions"] == 0
  with open(os.path.join(source, "codes", "report.json")) as f:
    plain = json.load(f)
  assert not plain["weighted"] and plain["weight_power"] == 0.0
  assert "unweighted_mse" not in plain
  # The teacher scored through the codes' table: logged for both; with codes that rebuild
  # the teacher's table exactly (M=1, one codeword per item) it is the teacher itself.
  own = ctx.evaluator("teacher", *pipeline.model_fns(ctx.teacher)).evaluate(
      teacher.variables(), "valid", ctx.dataset.valid
  )
  for r in (report, plain):
    # Codes that rebuild the table closely keep the teacher's ranking nearly intact.
    assert r["teacher_through_codes/valid/NDCG@10"] == pytest.approx(
        own["teacher/valid/NDCG@10"], abs=0.05
    )
    assert (
        r["teacher_through_codes/valid_hot/count"] + r["teacher_through_codes/valid_cold/count"]
        == r["teacher_through_codes/valid/count"]
        == len(ctx.dataset.valid)
    )
  exact = codes_stage.teacher_through_codes(
      pipeline.teacher_on_table(ctx, teacher),
      np.arange(len(full))[:, None].astype(np.uint8),
      full[None],
  )
  assert exact["teacher_through_codes/valid/NDCG@10"] == pytest.approx(
      own["teacher/valid/NDCG@10"], abs=1e-6
  )
  assert exact["teacher_through_codes/valid/HR@20"] == pytest.approx(
      own["teacher/valid/HR@20"], abs=1e-6
  )


@pytest.mark.slow
@pytest.mark.parametrize(
    "encoder,readout,epochs",
    [("transformer", "last", 20), ("gru4rec", "last", 20), ("narm", "narm", 40)],
)
def test_tiny_teacher_beats_popularity_on_the_planted_data(tmp_path, encoder, readout, epochs):
  """The synthetic sessions follow planted successors: a trained teacher must rank better
  than the items' popularity alone (the floor the data is built to leave behind). NARM's
  readout (four more weight matrices) needs more of the tiny data's epochs to get there."""
  c = tiny(
      **{
          "stages": ("teacher",),
          "model.encoder": encoder,
          "train.epochs": epochs,
          "train.patience": epochs,
          "train.learning_rate": 1e-2,
          "model.readout": readout,
      }
  )
  metrics = pipeline.run(c, str(tmp_path / "w"))
  dataset = pipeline.workdir_lib.load_data(c)
  order = data_lib.popularity_ranking(dataset.item_counts)
  rank = np.empty(dataset.num_items + 1, np.int64)
  rank[order] = np.arange(len(order))  # the popularity baseline's rank of every item
  target_rank = rank[dataset.test.targets]
  popular_ndcg = np.where(target_rank < 10, 1 / np.log2(target_rank + 2), 0.0).mean()
  assert data_lib.popularity_hit_rate(dataset, 10, "test") == pytest.approx(
      (target_rank < 10).mean()
  )
  assert metrics["teacher/test/HR@10"] > data_lib.popularity_hit_rate(dataset, 10, "test") + 0.05
  assert metrics["teacher/test/NDCG@10"] > popular_ndcg + 0.03


@pytest.mark.slow
def test_teacher_stage_trains_with_fused_rdrop_when_set(tmp_path):
  workdir = str(tmp_path / "w")
  pipeline.run(
      tiny(
          **{"stages": ("teacher",), "train.epochs": 1, "train.rdrop": 0.5, "train.fused_chunk": 64}
      ),
      workdir,
  )
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  logged = [r["teacher/rdrop"] for r in rows if "teacher/rdrop" in r]
  assert logged and all(x > 0 for x in logged)  # two dropout passes disagree


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "shape"])
def test_damaged_codes_file_is_a_clear_error(full_run, tmp_path, damage):
  workdir, _ = full_run
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  path = os.path.join(copy, "codes", "codes.npz")
  if damage == "truncate":
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[: len(data) // 2])
  else:
    with np.load(path) as f:
      saved = dict(f)
    np.savez(path, **{**saved, "codes": saved["codes"][:, :1]})
  with pytest.raises(CheckpointError, match=r"codes\.npz.*delete .*codes to learn the codes"):
    pipeline.run(tiny(), copy)


@pytest.mark.slow
def test_other_config_in_same_workdir_is_refused(full_run):
  workdir, _ = full_run
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(WorkdirError, match="model.d"):
    pipeline.run(tiny(**{"model.d": 32}), workdir)
  assert open(os.path.join(workdir, "config.json")).read() == before


class _Killed(Exception):
  pass


@pytest.mark.slow
def test_killed_teacher_resumes_to_the_same_result(tmp_path, monkeypatch):
  c = tiny(**{"stages": ("teacher",), "train.epochs": 3, "train.patience": 3})
  straight = pipeline.run(c, str(tmp_path / "straight"))
  killed = str(tmp_path / "killed")
  real_save = Checkpointer.save
  calls = []

  def save_then_die(self, *args, **kwargs):
    real_save(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 2:  # killed right after the second epoch's checkpoint
      raise _Killed()

  monkeypatch.setattr(Checkpointer, "save", save_then_die)
  with pytest.raises(_Killed):
    pipeline.run(c, killed)
  resumed_saves = []

  def counted_save(self, *args, **kwargs):
    resumed_saves.append(1)
    return real_save(self, *args, **kwargs)

  monkeypatch.setattr(Checkpointer, "save", counted_save)
  resumed = pipeline.run(c, killed)
  for key in ("teacher/test/NDCG@10", "teacher/valid/HR@20", "teacher/test_cold/MRR@5"):
    assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key
  # It resumed rather than retrained (training is deterministic, so equal metrics alone
  # would not show it): only the third epoch ran again, and every epoch validated once.
  assert len(resumed_saves) == 1
  with open(os.path.join(killed, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  validated = [r["epoch"] for r in records if r.get("stage") == "teacher" and "best" in r]
  assert validated == [0, 1, 2]


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
  c = tiny(**{"stages": ("teacher",), "train.epochs": 1})
  workdir = str(tmp_path / "w")
  pipeline.run(c, workdir)
  best = os.path.join(workdir, "teacher", "best")
  step_dir = os.path.join(best, os.listdir(best)[0])
  for root, _, files in os.walk(step_dir):
    for name in files:
      if name not in ("_CHECKPOINT_METADATA",):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  with pytest.raises(CheckpointError, match="teacher"):
    evaluate_workdir(workdir)


def test_missing_workdir_is_a_clear_error(tmp_path):
  with pytest.raises(WorkdirError, match="not a ccrec workdir"):
    evaluate_workdir(str(tmp_path / "nothing"))


def test_invalid_config_names_the_field(tmp_path):
  with pytest.raises(ValueError, match="data.max_len"):
    pipeline.run(tiny(**{"data.max_len": 0}), str(tmp_path / "w"))
  c = tiny()
  with pytest.raises(AttributeError):
    c.modle = 3  # locked: a misspelt field is an error


def test_field_added_to_the_schema_later_is_not_a_difference(tmp_path):
  from ccrec.workflow import workdir as workdir_lib

  c = tiny()
  wd = str(tmp_path / "w")
  workdir_lib.prepare(wd, c)
  path = os.path.join(wd, "config.json")
  saved = json.load(open(path))
  del saved["codes"]["refine_iterations"]  # as written before the field existed
  json.dump(saved, open(path, "w"))
  workdir_lib.prepare(wd, c)  # default value: accepted
  with pytest.raises(WorkdirError, match="codes.refine_iterations"):
    workdir_lib.prepare(wd, tiny(**{"codes.refine_iterations": 3}))


def test_warm_start_copies_the_teachers_encoder_and_keeps_the_codes():
  teacher, student = build_models(tiny(), 60)
  t_state = TrainState.create(init_variables(teacher, jax.random.key(0)), optax.adam(1e-3))
  s_vars = init_variables(student, jax.random.key(1))
  warm = pipeline.warm_start(s_vars, t_state)
  leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]
  assert set(warm["params"]) == set(s_vars["params"])
  for name, value in t_state.params.items():
    same_as = value if name != "items" else s_vars["params"]["items"]  # codebooks: the student's
    for a, b in zip(leaves(same_as), leaves(warm["params"][name]), strict=True):
      np.testing.assert_array_equal(a, b)
  consts = lambda v: {k: x for k, x in v.items() if k != "params"}
  for a, b in zip(leaves(consts(s_vars)), leaves(consts(warm)), strict=True):
    np.testing.assert_array_equal(a, b)  # the integer codes are untouched


def test_stages_must_be_a_prefix_except_codes_for_a_tt_student():
  from ccrec import config as config_lib

  config_lib.validate(
      tiny(**{"student.embedding": "tt", "stages": ("teacher", "student_pretrain", "distill")})
  )
  config_lib.validate(tiny(**{"stages": ("teacher", "codes")}))
  for stages in (("teacher", "student_pretrain"), ("codes",), ("teacher", "codes", "distill")):
    with pytest.raises(ValueError, match="config.stages: must be a prefix"):
      config_lib.validate(tiny(**{"stages": stages}))
