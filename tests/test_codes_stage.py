"""ccrec.workflow.codes_stage on the tiny config with an untrained teacher: what the stage
writes, that a rerun reads it back, and the checks on a saved codes file."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from ccrec.checkpoint import CheckpointError
from ccrec.models.embeddings import with_item_table
from ccrec.models.recommender import init_variables
from ccrec.train import code_learning, code_refinement
from ccrec.train.state import TrainState
from ccrec.workflow import codes_stage, pipeline

from helpers import tiny


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("codes"))
  ctx = pipeline.make_context(tiny(), workdir)
  teacher = TrainState.create(init_variables(ctx.teacher, jax.random.key(0)), optax.adam(1e-3))
  return ctx, teacher, pipeline.learn_codes(ctx, teacher)


def test_the_stage_writes_unique_codes_and_its_report(stage):
  ctx, teacher, learned = stage
  c = ctx.config.codes
  v = ctx.dataset.num_items
  codes, books = learned["codes"], learned["codebooks"]
  assert codes.shape == (v + 1, c.num_codebooks) and codes.dtype == np.uint8
  assert books.shape == (c.num_codebooks, c.codebook_size, ctx.config.model.d)
  assert not codes[0].any()  # padding row
  assert len({tuple(x) for x in codes[1:]}) == v  # codes.unique: every item its own code
  with np.load(os.path.join(ctx.stage_dir("codes"), "codes.npz")) as f:
    np.testing.assert_array_equal(f["codes"], codes)
    np.testing.assert_array_equal(f["codebooks"], books)
  with open(os.path.join(ctx.stage_dir("codes"), "report.json")) as f:
    report = json.load(f)
  # Each least-squares step can only lower the error of the codes it is given.
  assert report["refit_mse"] <= report["mse"] * (1 + 1e-5)
  assert report["refined_mse"] <= report["refit_mse"] * (1 + 1e-5)
  assert report["final_collisions"] == 0 and report["final_unresolved"] == 0
  table = np.asarray(ctx.teacher.apply(teacher.variables(), method="table"))
  err = np.sum((code_refinement.reconstruct(codes, books)[1:] - table[1:]) ** 2, axis=1)
  assert report["final_mse"] == pytest.approx(err.mean(), rel=1e-4)
  assert report["teacher_through_codes/valid/count"] == len(ctx.dataset.valid.targets)
  with open(os.path.join(ctx.workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  assert [r["stage"] for r in logged] == ["codes"]
  assert logged[0]["codes/final_mse"] == pytest.approx(report["final_mse"])


def test_a_rerun_reads_the_saved_codes(stage, monkeypatch):
  ctx, teacher, learned = stage

  def no_learning(*args, **kwargs):
    raise AssertionError("the codes were learned again")

  monkeypatch.setattr(code_learning, "learn_codes", no_learning)
  again = pipeline.learn_codes(ctx, teacher)
  np.testing.assert_array_equal(again["codes"], learned["codes"])
  np.testing.assert_array_equal(again["codebooks"], learned["codebooks"])


def test_teacher_through_exact_codes_is_the_teacher(stage):
  ctx, teacher, _ = stage
  table = np.asarray(ctx.teacher.apply(teacher.variables(), method="table"))
  # One codebook whose codeword v is row v: the codes rebuild the table exactly.
  exact = codes_stage.teacher_through_codes(
      pipeline.teacher_on_table(ctx, teacher),
      np.arange(len(table))[:, None].astype(np.uint8),
      table[None],
  )
  own = ctx.evaluator("teacher", *pipeline.model_fns(ctx.teacher)).evaluate(
      teacher.variables(), "valid", ctx.dataset.valid
  )
  assert exact["teacher_through_codes/valid/NDCG@10"] == pytest.approx(
      own["teacher/valid/NDCG@10"], abs=1e-6
  )


@pytest.mark.parametrize(
    "damage,error",
    [
        ("truncate", r"is damaged"),
        ("shape", r"holds codes .* this config needs \[61, 2\] integer codes"),
        ("range", r"codes outside \[0, 8\)"),
    ],
)
def test_a_damaged_codes_file_is_named(tmp_path, damage, error):
  path = str(tmp_path / codes_stage.CODES_FILE)
  codes = np.zeros((61, 2), np.uint8)
  books = np.zeros((2, 8, 16), np.float32)
  if damage == "shape":
    codes = codes[:, :1]
  if damage == "range":
    codes[5, 1] = 8
  np.savez(path, codes=codes, codebooks=books)
  if damage == "truncate":
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match=error + r".*delete .* to learn the codes again"):
    codes_stage.read_codes(str(tmp_path), 60, 2, 8, 16)


def test_with_item_table_replaces_only_the_table():
  variables = {
      "params": {"items": {"embedding": np.zeros((4, 2), np.float32)}, "encoder": {"w": np.ones(3)}}
  }
  table = np.arange(8, dtype=np.float64).reshape(4, 2)
  out = with_item_table(variables, table)
  got = out["params"]["items"]["embedding"]
  assert isinstance(got, np.ndarray) and got.dtype == np.float32
  np.testing.assert_array_equal(got, table)
  assert out["params"]["encoder"] is variables["params"]["encoder"]
  assert not variables["params"]["items"]["embedding"].any()  # the input is not modified
  device = {"params": {"items": {"embedding": jax.numpy.zeros((4, 2))}}}
  placed = with_item_table(device, table)["params"]["items"]["embedding"]
  assert isinstance(placed, jax.Array)
  assert placed.sharding == device["params"]["items"]["embedding"].sharding
  with pytest.raises(ValueError, match=r"item table of shape \[3, 2\]"):
    with_item_table(variables, table[:3])
