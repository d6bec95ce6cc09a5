"""ccrec.parallel: sharded == unsharded on 8 fake CPU devices, compile once, loud size errors.

The multi-device checks run in ONE subprocess (this file run as a script) with
XLA_FLAGS=--xla_force_host_platform_device_count=8 set before jax is imported;
pytest itself may already have imported jax with one device. The subprocess
prints a JSON report that the tests below assert on.

Exactness: one step on an 8x1 (data) and a 4x2 (data x model) mesh against the
same step on one device -- loss sums, every gradient (read back through an
optimizer that stores the raw gradients in its state), every parameter after
the update -- for the teacher step and the joint distillation step (dropout
on, so the random streams must agree too), and the evaluation metrics.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_DEVICES = 8
TOL = 1e-5
V, D, L, B = 71, 16, 6, 8  # V + 1 = 72 rows: splits over model=2; an unusual size to spot in HLO
MESHES = ((8, 1), (4, 2))
# Fake devices are threads: on a busy machine one can reach a collective long after the
# others, and XLA:CPU aborts after 40 s by default (jax-ml/jax#31818). Wait longer.
XLA_FLAGS = (
    f"--xla_force_host_platform_device_count={NUM_DEVICES} "
    "--xla_cpu_collective_call_terminate_timeout_seconds=300 "
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120"
    # Tiny programs: LLVM's expensive passes cost more compile time than they save.
    " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    # Single-threaded ops: one run hung (> 600 s) on the loaded 2-core machine, the
    # known remedy for a wedged Eigen pool; cause not confirmed (docs/scale_out.md).
    " --xla_cpu_multi_thread_eigen=false"
)
# XLA:CPU runs a device's independent ready thunks on one shared pool sized
# max(devices, NPROC). Collectives block their pool thread until every peer arrives:
# CI once had all 8 threads blocked (7 in a collective-permute, 1 in an all-reduce
# whose peer's thunk was still queued) and aborted after 300 s. A pool 4x the
# device count leaves room for the queued thunks (docs/scale_out.md).
POOL_THREADS = str(4 * NUM_DEVICES)


# ---------------------------------------------------------------------------- pytest side


@pytest.fixture(scope="module")
def report():
  env = dict(
      os.environ, XLA_FLAGS=XLA_FLAGS, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, NPROC=POOL_THREADS
  )
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__)],
      env=env,
      cwd=ROOT,
      check=False,
      capture_output=True,
      text=True,
      timeout=480,
  )
  if proc.returncode != 0:
    pytest.fail(f"worker failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [f"{d}x{m}" for d, m in MESHES])
@pytest.mark.parametrize("step", ["teacher", "teacher_fused", "distill"])
def test_one_step_matches_single_device(report, step, mesh):
  r = report[f"{step}/{mesh}"]
  assert r["num_leaves"] > 10
  assert r["loss"] <= TOL, r
  assert r["grads"] <= TOL, r
  assert r["params"] <= TOL, r
  assert r["consts_equal"], r


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [f"{d}x{m}" for d, m in MESHES])
def test_evaluation_metrics_match_single_device(report, mesh):
  for model in ("teacher", "student"):
    r = report[f"eval/{model}/{mesh}"]
    assert r["num_metrics"] >= 27, r  # 9 metrics x (all, hot, cold)
    assert r["max_diff"] <= TOL, r
    assert r["count"] == report["eval_examples"]
    # Per-example ranks (launch/compare.py) gathered from the mesh, in example order.
    assert r["ranks_equal"], r
    assert r["ranks_ndcg_diff"] <= TOL, r


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [f"{d}x{m}" for d, m in MESHES])
def test_teacher_scored_through_another_table_matches_single_device(report, mesh):
  r = report[f"eval/swapped_table/{mesh}"]
  assert r["same_sharding"] and r["differs_from_teacher"], r
  assert r["max_diff"] <= TOL, r


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [f"{d}x{m}" for d, m in MESHES])
def test_compiles_once_per_mesh_and_keeps_layouts(report, mesh):
  # Counted with a Python side effect in the models' forward pass, which runs only while
  # jax traces: traced once (by `lower`, or at the first call), never again for later
  # batches or a second evaluation.
  for step in ("teacher", "teacher_fused", "distill", "eval/teacher"):
    traces = report[f"{step}/{mesh}/traces"]
    assert traces["later"] == 0, (step, mesh, traces)
  for step in ("teacher", "teacher_fused", "distill"):
    assert report[f"{step}/{mesh}/traces"]["first"] > 0, step  # the counter counts
  assert report[f"teacher/{mesh}/same_shardings"]
  assert report[f"teacher_fused/{mesh}/same_shardings"]
  assert report[f"distill/{mesh}/same_shardings"]


@pytest.mark.slow
def test_item_leaves_split_along_model_axis(report):
  # 4x2: the teacher table, the student's codes and their Adam moments are split over 'model'.
  specs = report["specs/4x2"]
  assert specs["teacher.params.items.embedding"] == "P('model',)"
  assert specs["teacher.opt_state.items.embedding"] == ["P('model',)"]  # optimizer state too
  assert specs["student.consts.codes.items.codes"] == "P('model',)"
  assert specs["student.params.items.codebooks"] == "P()"
  assert specs["teacher.params.encoder"] == ["P()"]
  assert report["shard_rows/4x2"] == (V + 1) // 2
  # 8x1: everything replicated.
  assert set(report["specs/8x1"].values()) == {"P()"}


@pytest.mark.slow
def test_item_axis_never_gathered_whole(report):
  # Logits [N, V+1] come out split along 'model' by propagation from the table; no
  # collective of the compiled steps moves an array with a whole item axis.
  for name in ("teacher", "teacher_fused", "distill", "eval/teacher", "eval/student"):
    assert report[f"hlo/{name}/collectives"] > 0, name
    assert report[f"hlo/{name}/item_sized"] == [], name


@pytest.mark.slow
def test_batch_not_divisible_by_data_axis_raises(report):
  msg = report["errors"]["shard_batch"]
  assert msg.startswith("BatchSizeError") and "multiples of 8" in msg
  assert "train.batch_size" in msg and "eval.batch_size" in msg
  msg = report["errors"]["context_train"]
  assert msg.startswith("BatchSizeError") and "config.train.batch_size=12" in msg
  assert "set config.train.batch_size to a multiple of 8" in msg
  msg = report["errors"]["context_eval"]
  assert msg.startswith("BatchSizeError") and "config.eval.batch_size=20" in msg
  msg = report["errors"]["context_distill"]
  assert msg.startswith("BatchSizeError") and "config.distill.batch_size=36" in msg
  msg = report["errors"]["items"]
  assert msg.startswith("ItemShardingError") and "num_items + 1 = 61" in msg and "[1]" in msg
  msg = report["errors"]["mesh"]
  assert msg.startswith("MeshError") and "parallel.model=3" in msg


@pytest.mark.slow
def test_context_builds_the_mesh(report):
  assert report["context/mesh"] == {"data": 4, "model": 2}


def test_single_process_defaults():
  # In this (pytest) process: the config section exists and validates, no mesh on one device.
  import jax

  from ccrec import config as config_lib
  from ccrec import parallel

  c = config_lib.base_config()
  assert (c.parallel.data, c.parallel.model) == (-1, 1)
  c.parallel.model = 0
  with pytest.raises(ValueError, match="parallel.model"):
    config_lib.validate(c)
  c = config_lib.base_config()
  if jax.device_count() != 1:
    pytest.skip("the rest checks the single-device default (this process has several devices)")
  assert parallel.default_mesh(c.parallel.data, c.parallel.model) is None
  c.parallel.model = 2
  with pytest.raises(parallel.MeshError, match="parallel.model=2"):
    parallel.default_mesh(c.parallel.data, c.parallel.model)


def test_item_leaf_rule():
  from jax.tree_util import DictKey, GetAttrKey

  from ccrec import parallel

  assert parallel.is_item_leaf((GetAttrKey("params"), DictKey("items"), DictKey("embedding")))
  assert parallel.is_item_leaf((GetAttrKey("opt_state"), DictKey("items"), DictKey("embedding")))
  assert parallel.is_item_leaf((DictKey("codes"), DictKey("items"), DictKey("codes")))
  assert not parallel.is_item_leaf((DictKey("items"), DictKey("codebooks")))
  assert not parallel.is_item_leaf((DictKey("encoder"), DictKey("embedding")))


# ---------------------------------------------------------------------------- worker side


def _worker() -> dict:
  import re
  import tempfile

  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  import optax

  from ccrec import config as config_lib
  from ccrec import parallel
  from ccrec.data import Sequences, prefix_augment, prefix_batches, window_batches
  from ccrec.evaluation import significance
  from ccrec.evaluation.evaluator import Evaluator
  from ccrec.models.build import model_fns
  from ccrec.models.codes import set_codes
  from ccrec.models.embeddings import with_item_table
  from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
  from ccrec.models.views import DistillHeads, init_heads
  from ccrec.train import distill as distill_lib
  from ccrec.train import teacher as teacher_lib
  from ccrec.train.state import TrainState
  from ccrec.workflow import pipeline

  assert jax.device_count() == NUM_DEVICES, jax.devices()
  out: dict = {}
  import time

  t0 = time.perf_counter()

  def progress(what):
    print(f"[{time.perf_counter() - t0:6.1f}s] {what}", file=sys.stderr, flush=True)

  rng = np.random.default_rng(0)
  seqs = Sequences.from_lists(
      [list(rng.integers(1, V + 1, rng.integers(2, 10))) for _ in range(4 * B)]
  )
  batches = list(window_batches(seqs, B, L, shuffle=False))[:3]
  spec = {
      "num_items": V,
      "d": D,
      "num_blocks": 1,
      "num_heads": 2,
      "inner": 32,
      "dropout": 0.1,
      "attn_dropout": 0.1,
      "max_len": L,
  }
  traces = [0]  # forward passes traced: a Python side effect runs once per trace

  class Traced(SessionRecommender):

    def __call__(self, *args, **kwargs):
      traces[0] += 1
      return super().__call__(*args, **kwargs)

  teacher = Traced(ModelSpec(**spec))
  student = Traced(ModelSpec(**spec, embedding="codes", num_codebooks=2, codebook_size=4))
  heads = DistillHeads(D)
  hot = np.zeros(V + 1, bool)
  hot[1:20] = True
  codes = rng.integers(0, 4, (V + 1, 2))
  codes[0] = 0
  t_vars = init_variables(teacher, jax.random.key(0))
  s_vars = set_codes(init_variables(student, jax.random.key(1)), codes)
  h_vars = init_heads(heads, jax.random.key(2), L)
  # Host copies: the steps donate their state, so every run starts from fresh device arrays.
  t_vars, s_vars, h_vars = jax.tree.map(np.asarray, (t_vars, s_vars, h_vars))

  # SGD whose state is the last raw gradient: the step's gradients can be read back exactly.
  def record_grads() -> optax.GradientTransformation:
    return optax.GradientTransformation(
        lambda p: jax.tree.map(jnp.zeros_like, p),
        lambda g, s, p=None: (jax.tree.map(lambda x: -0.1 * x, g), g),
    )

  def teacher_state():
    return TrainState.create(t_vars, record_grads())

  def distill_state(tx=None):
    tx = tx or record_grads()
    # The student keeps a moving average of its weights (student.ema_decay): the average,
    # held in its optimizer state, is compared across meshes and keeps its shardings too.
    return distill_lib.DistillState(
        teacher=TrainState.create(t_vars, tx),
        student=TrainState.create(s_vars, tx, ema_decay=0.9),
        heads=TrainState.create(h_vars, tx),
    )

  dc = ml_collections.ConfigDict(
      {
          "bidirectional": True,
          "contrastive": True,
          "soft_targets": True,
          "beta": 0.5,
          "gamma": 0.3,
          "kd_temperature": 1.0,
          "con_temperature": 0.2,
      }
  )
  sc = ml_collections.ConfigDict({"mixup": True, "eta": 0.8, "mse_weight": 1.0})
  makers = {
      "teacher": (lambda: teacher_lib.make_train_step(teacher, "window"), teacher_state),
      # The fused, chunked R-Drop loss (configs/teacher.py): a scan over row chunks whose
      # rows stay split over 'data' and whose logits stay split over 'model'.
      "teacher_fused": (
          lambda: teacher_lib.make_train_step(
              teacher, "window", label_smoothing=0.1, rdrop=1.0, fused_chunk=8
          ),
          teacher_state,
      ),
      # With label smoothing: its mean over the item axis must not gather that axis either.
      "distill": (
          lambda: distill_lib.make_distill_step(
              teacher, student, heads, hot, dc, sc, "window", label_smoothing=0.1
          ),
          distill_state,
      ),
  }
  key = jax.random.key(7)

  def max_diff(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(
        [
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        ],
        default=0.0,
    )

  def opt_grads(state):
    parts = (
        [state] if isinstance(state, TrainState) else [state.teacher, state.student, state.heads]
    )
    return [p.opt_state for p in parts]

  def params(state):
    parts = (
        [state] if isinstance(state, TrainState) else [state.teacher, state.student, state.heads]
    )
    return [p.params for p in parts], [p.consts for p in parts]

  def collectives(compiled_text):
    found, item_sized = 0, []
    for line in compiled_text.splitlines():
      m = re.search(
          r"= (.*?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
          r"collective-permute)(-start)?\(",
          line,
      )
      if m:
        found += 1
        dims = [
            int(x)
            for shape in re.findall(r"\[([\d,]*)\]", m.group(1))
            for x in shape.split(",")
            if x
        ]
        if any(x >= V for x in dims):
          item_sized.append(f"{m.group(2)} {m.group(1)[:80]}")
    return found, item_sized

  def spec_names(state):
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    names = {}
    for path, leaf in flat:
      name = ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
      names[name] = str(leaf.sharding.spec)
    return names

  for name, (make_step, make_state) in makers.items():
    ref_state, ref_metrics = make_step()(make_state(), batches[0], key)
    ref_params, ref_consts = params(ref_state)
    for data, model in MESHES:
      tag = f"{name}/{data}x{model}"
      progress(tag)
      mesh = parallel.make_mesh(data, model)
      step = make_step()
      state = parallel.place_state(make_state(), mesh)
      in_shardings = [x.sharding for x in jax.tree.leaves(state)]
      if name == "distill" and data == 4:
        leaf_specs = spec_names(state)
        out["specs/4x2"] = {
            "teacher.params.items.embedding": leaf_specs["teacher.params.items.embedding"],
            "teacher.opt_state.items.embedding": sorted(
                {
                    v
                    for k, v in leaf_specs.items()
                    if k.startswith("teacher.opt_state") and k.endswith("items.embedding")
                }
            ),
            "student.consts.codes.items.codes": leaf_specs["student.consts.codes.items.codes"],
            "student.params.items.codebooks": leaf_specs["student.params.items.codebooks"],
            "teacher.params.encoder": sorted(
                {v for k, v in leaf_specs.items() if k.startswith("teacher.params.encoder")}
            ),
        }
        emb = state.teacher.params["items"]["embedding"]
        out["shard_rows/4x2"] = int(emb.addressable_shards[0].data.shape[0])
      if name == "distill" and data == 8:
        out["specs/8x1"] = spec_names(state)
      sharded_batch = parallel.shard_batch(batches[0], mesh)
      traced_before = traces[0]
      compiled = step.lower(state, sharded_batch, key).compile().as_text()
      progress(f"{tag} compiled")
      n, item_sized = collectives(compiled)
      if model == 2:
        out[f"hlo/{name}/collectives"], out[f"hlo/{name}/item_sized"] = n, item_sized
      new, metrics = step(state, sharded_batch, key)
      traced_first = traces[0]
      progress(f"{tag} ran")
      new_params, new_consts = params(new)
      out[tag] = {
          "loss": max(
              abs(float(metrics[k]) - float(ref_metrics[k])) / max(1.0, abs(float(ref_metrics[k])))
              for k in ref_metrics
          ),
          "grads": max_diff(opt_grads(new), opt_grads(ref_state)),
          "params": max_diff(new_params, ref_params),
          "consts_equal": max_diff(new_consts, ref_consts) == 0.0,
          "num_leaves": len(jax.tree.leaves(new_params)),
      }
      out[f"{tag}/same_shardings"] = all(
          a.is_equivalent_to(x.sharding, x.ndim) for a, x in zip(in_shardings, jax.tree.leaves(new))
      )
      for batch in batches[1:]:
        new, _ = step(new, parallel.shard_batch(batch, mesh), key)
      out[f"{tag}/traces"] = {
          "first": traced_first - traced_before,
          "later": traces[0] - traced_first,
      }

  # Evaluation: identical metric sums on one device and on each mesh.
  examples = prefix_augment(seqs)
  out["eval_examples"] = len(examples.targets)
  fns = {"teacher": model_fns(teacher), "student": model_fns(student)}
  variables = {"teacher": t_vars, "student": s_vars}
  for model_name, (encode, score) in fns.items():
    ref_evaluator = Evaluator(
        model_name, encode, score, num_items=V, hot=hot, batch_size=16, max_len=L
    )
    ref = ref_evaluator.evaluate(variables[model_name], "valid", examples)
    ref_ranks = ref_evaluator.ranks(variables[model_name], examples)
    for data, model in MESHES:
      mesh = parallel.make_mesh(data, model)
      progress(f"eval/{model_name}/{data}x{model}")
      ev = Evaluator(
          model_name,
          encode,
          score,
          num_items=V,
          hot=hot,
          batch_size=16,
          max_len=L,
          to_device=lambda b, mesh=mesh: parallel.shard_batch(b, mesh),
      )
      placed = parallel.place_state(variables[model_name], mesh)
      if model == 2:  # compile through the evaluator's own jit: the evaluation reuses it
        batch = parallel.shard_batch(next(iter(prefix_batches(examples, 16, L))), mesh)
        n, item_sized = collectives(ev._step.lower(placed, batch).compile().as_text())
        out[f"hlo/eval/{model_name}/collectives"] = n
        out[f"hlo/eval/{model_name}/item_sized"] = item_sized
      traced_before = traces[0]
      got = ev.evaluate(placed, "valid", examples)
      traced_first = traces[0]
      assert ev.evaluate(placed, "valid", examples) == got
      evaluated_again = traces[0]
      assert set(got) == set(ref), (sorted(got), sorted(ref))
      ranks = ev.ranks(placed, examples)
      out[f"eval/{model_name}/{data}x{model}"] = {
          "num_metrics": sum(1 for k in ref if not k.endswith("count")),
          "max_diff": max(abs(got[k] - ref[k]) for k in ref),
          "count": got[f"{model_name}/valid/count"],
          "ranks_equal": bool(ranks.shape == ref_ranks.shape and np.array_equal(ranks, ref_ranks)),
          "ranks_ndcg_diff": abs(
              float(significance.per_example(ranks, "NDCG@10").mean())
              - got[f"{model_name}/valid/NDCG@10"]
          ),
      }
      if model_name == "teacher":
        out[f"eval/teacher/{data}x{model}/traces"] = {
            "first": traced_first - traced_before,
            "later": evaluated_again - traced_first,
        }
        # The teacher scored through another table (the codes stage's check), replaced in
        # the mesh's layout: same metrics as on one device, same sharding as the table.
        other = np.asarray(jax.random.normal(jax.random.key(7), (V + 1, D)))
        swapped = with_item_table(placed, other)
        emb, new_emb = (v["params"]["items"]["embedding"] for v in (placed, swapped))
        want = ref_evaluator.evaluate(with_item_table(t_vars, other), "valid", examples)
        got = ev.evaluate(swapped, "valid", examples)
        out[f"eval/swapped_table/{data}x{model}"] = {
            "same_sharding": new_emb.sharding.is_equivalent_to(emb.sharding, 2),
            "max_diff": max(abs(got[k] - want[k]) for k in want),
            "differs_from_teacher": abs(
                want["teacher/valid/NDCG@10"] - ref["teacher/valid/NDCG@10"]
            )
            > 0,
        }

  # Documented errors.
  progress("errors")
  errors = {}

  def error(fn):
    try:
      fn()
    except Exception as e:  # noqa: BLE001  (the report carries the type name)
      return f"{type(e).__name__}: {e}"
    return "no error"

  mesh8 = parallel.make_mesh(8, 1)
  errors["shard_batch"] = error(
      lambda: parallel.shard_batch({k: v[:4] for k, v in batches[0].items()}, mesh8)
  )
  errors["mesh"] = error(lambda: parallel.make_mesh(-1, 3))

  def context(**overrides):
    c = config_lib.base_config()
    c.data.dataset, c.data.max_len = "synthetic", 8
    c.data.synthetic_items, c.data.synthetic_sessions = 60, 50
    c.parallel.data, c.parallel.model = overrides.pop("data", -1), overrides.pop("model", 1)
    c.train.batch_size = overrides.pop("train_batch", 32)
    c.eval.batch_size = overrides.pop("eval_batch", 64)
    c.distill.batch_size = overrides.pop("distill_batch", 0)
    with tempfile.TemporaryDirectory() as workdir:
      return pipeline.make_context(c, workdir)

  errors["context_train"] = error(lambda: context(train_batch=12))
  errors["context_eval"] = error(lambda: context(eval_batch=20))
  errors["context_distill"] = error(lambda: context(distill_batch=36))
  errors["items"] = error(lambda: context(data=4, model=2))
  out["errors"] = errors
  parallel.check_items(63, parallel.make_mesh(4, 2))  # 64 rows: fine
  ctx_mesh = parallel.default_mesh(4, 2)
  out["context/mesh"] = dict(ctx_mesh.shape)

  return out


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  print(json.dumps(_worker()))
