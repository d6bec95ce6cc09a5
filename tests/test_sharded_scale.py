"""Large-catalog training on the item-sharded mesh, on 8 fake CPU devices.

`parallel.create_sharded`: the teacher's state (table and Adam moments) comes out of
its init already split over 'model', equal to the single-device init, and the compiled
init never holds the whole table on a device. Sampled softmax (ccrec/ops/sampled.py):
the teacher and distillation steps on a 4x2 (data x model) mesh give the single-device
loss sums, gradients and parameters.

As tests/test_parallel.py, the checks run in one subprocess (this file as a script)
with XLA_FLAGS set before jax is imported, and print a JSON report.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_parallel  # noqa: E402  (the same XLA flags: fake devices, generous timeouts)

NUM_DEVICES = test_parallel.NUM_DEVICES
V, D, L, B = 71, 16, 6, 8  # V + 1 = 72 rows: split 2 and 4 ways
TOL = 1e-5
pytestmark = pytest.mark.slow  # one subprocess compiling eight steps on fake devices


@pytest.fixture(scope="module")
def report():
  env = dict(
      os.environ,
      XLA_FLAGS=test_parallel.XLA_FLAGS,
      JAX_PLATFORMS="cpu",
      PYTHONPATH=ROOT,
      NPROC=test_parallel.POOL_THREADS,
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


@pytest.mark.parametrize("model", [2, 4])
def test_table_is_born_split_and_equals_the_single_device_init(report, model):
  r = report[f"init/{model}"]
  assert r["table_spec"] == "P('model',)" and r["moments_specs"] == ["P('model',)"]
  assert r["shard_rows"] == [(V + 1) // model] * NUM_DEVICES
  assert r["encoder_specs"] == ["P()"]
  assert r["max_diff"] == 0.0 and r["num_leaves"] > 10
  # The compiled init holds only shards: no array with the whole item axis anywhere.
  assert r["whole_table_in_hlo"] == [] and r["shard_in_hlo"]


@pytest.mark.parametrize("step", ["teacher", "teacher_rdrop", "distill"])
def test_sampled_steps_on_the_item_sharded_mesh_match_one_device(report, step):
  r = report[f"sampled/{step}"]
  assert r["loss"] <= TOL and r["grads"] <= TOL and r["params"] <= TOL, r
  assert r["same_shardings"] and r["cache_size"] == 1, r
  assert r["finite"], r


# ---------------------------------------------------------------------------- worker side


def _worker() -> dict:
  import re

  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  import optax

  from ccrec import parallel
  from ccrec.data import Sequences, window_batches
  from ccrec.models.codes import set_codes
  from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
  from ccrec.models.views import DistillHeads, init_heads
  from ccrec.ops import sampled
  from ccrec.train import distill as distill_lib
  from ccrec.train import teacher as teacher_lib
  from ccrec.train.state import TrainState

  assert jax.device_count() == NUM_DEVICES, jax.devices()
  out: dict = {}

  def max_diff(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(
        [
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        ],
        default=0.0,
    )

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
  teacher = SessionRecommender(ModelSpec(**spec))
  student = SessionRecommender(
      ModelSpec(**spec, embedding="codes", num_codebooks=2, codebook_size=4)
  )

  # Sharded init of the teacher's train state (what pipeline.train_teacher does).
  tx = optax.adam(1e-3)
  make = lambda k: TrainState.create(init_variables(teacher, k), tx)
  key = jax.random.key(11)
  ref = jax.tree.map(np.asarray, make(key))
  for model in (2, 4):
    mesh = parallel.make_mesh(-1, model)
    state = parallel.create_sharded(make, mesh, key)
    emb = state.params["items"]["embedding"]
    moments = [
        x
        for p, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
        if parallel.is_item_leaf(p)
    ]
    encoder = jax.tree.leaves(state.params["encoder"])
    shardings = parallel.state_shardings(jax.eval_shape(make, key), mesh)
    hlo = jax.jit(make, out_shardings=shardings).lower(key).compile().as_text()
    whole = sorted(set(re.findall(rf"f32\[{V + 1},{D}\]", hlo)))
    out[f"init/{model}"] = {
        "table_spec": str(emb.sharding.spec),
        "moments_specs": sorted({str(x.sharding.spec) for x in moments}),
        "encoder_specs": sorted({str(x.sharding.spec) for x in encoder}),
        "shard_rows": [int(s.data.shape[0]) for s in emb.addressable_shards],
        "max_diff": max_diff(jax.tree.map(np.asarray, state), ref),
        "num_leaves": len(jax.tree.leaves(state)),
        "whole_table_in_hlo": whole,
        "shard_in_hlo": f"f32[{(V + 1) // model},{D}]" in hlo,
    }
    print(f"init/{model} done", file=sys.stderr, flush=True)

  # Sampled softmax on the 4x2 mesh against one device.
  rng = np.random.default_rng(0)
  seqs = Sequences.from_lists(
      [list(rng.integers(1, V + 1, rng.integers(2, 10))) for _ in range(4 * B)]
  )
  batches = list(window_batches(seqs, B, L, shuffle=False))[:2]
  counts = np.bincount(seqs.items, minlength=V + 1)
  sampler = sampled.Sampler.from_counts(counts, 24)
  heads = DistillHeads(D)
  hot = np.zeros(V + 1, bool)
  hot[1:20] = True
  codes = rng.integers(0, 4, (V + 1, 2))
  codes[0] = 0
  t_vars = jax.tree.map(np.asarray, init_variables(teacher, jax.random.key(0)))
  s_vars = jax.tree.map(np.asarray, set_codes(init_variables(student, jax.random.key(1)), codes))
  h_vars = jax.tree.map(np.asarray, init_heads(heads, jax.random.key(2), L))

  def record_grads():  # SGD whose state is the last raw gradient
    return optax.GradientTransformation(
        lambda p: jax.tree.map(jnp.zeros_like, p),
        lambda g, s, p=None: (jax.tree.map(lambda x: -0.1 * x, g), g),
    )

  def teacher_state():
    return TrainState.create(t_vars, record_grads())

  def distill_state():
    return distill_lib.DistillState(
        teacher=TrainState.create(t_vars, record_grads()),
        student=TrainState.create(s_vars, record_grads()),
        heads=TrainState.create(h_vars, record_grads()),
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
      "teacher": (
          lambda: teacher_lib.make_train_step(
              teacher, "window", label_smoothing=0.1, sampler=sampler
          ),
          teacher_state,
      ),
      "teacher_rdrop": (
          lambda: teacher_lib.make_train_step(teacher, "window", rdrop=1.0, sampler=sampler),
          teacher_state,
      ),
      "distill": (
          lambda: distill_lib.make_distill_step(
              teacher, student, heads, hot, dc, sc, "window", label_smoothing=0.1, sampler=sampler
          ),
          distill_state,
      ),
  }

  def parts(state):
    return [state] if isinstance(state, TrainState) else [state.teacher, state.student, state.heads]

  step_key = jax.random.key(7)
  mesh = parallel.make_mesh(4, 2)
  for name, (make_step, make_state) in makers.items():
    ref_state, ref_metrics = make_step()(make_state(), batches[0], step_key)
    step = make_step()
    state = parallel.place_state(make_state(), mesh)
    in_shardings = [x.sharding for x in jax.tree.leaves(state)]
    new, metrics = step(state, parallel.shard_batch(batches[0], mesh), step_key)
    out[f"sampled/{name}"] = {
        "loss": max(
            abs(float(metrics[k]) - float(ref_metrics[k])) / max(1.0, abs(float(ref_metrics[k])))
            for k in ref_metrics
        ),
        "grads": max_diff(
            [p.opt_state for p in parts(new)], [p.opt_state for p in parts(ref_state)]
        ),
        "params": max_diff([p.params for p in parts(new)], [p.params for p in parts(ref_state)]),
        "same_shardings": all(
            a.is_equivalent_to(x.sharding, x.ndim)
            for a, x in zip(in_shardings, jax.tree.leaves(new))
        ),
        "finite": all(np.isfinite(float(v)) for v in metrics.values()),
    }
    new, _ = step(new, parallel.shard_batch(batches[1], mesh), step_key)
    out[f"sampled/{name}"]["cache_size"] = step._cache_size()
    print(f"sampled/{name} done", file=sys.stderr, flush=True)
  return out


if __name__ == "__main__":
  print(json.dumps(_worker()))
