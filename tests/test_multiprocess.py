"""Two processes on one machine (jax.distributed on localhost, 2 fake CPU devices each).

Each process runs this file as a script: it goes through launch/train.py's own
`main` (flags --coordinator_address/--num_processes/--process_id, so
jax.distributed.initialize() runs before anything touches devices) on the tiny
config, teacher stage, one epoch, over a 4x1 mesh spanning both processes;
then, still inside the distributed runtime, it checks that each process fed
exactly its rows of a global batch and that an orbax checkpoint of a state
whose item axis is split ACROSS the two processes round-trips. A second pair
of processes then runs launch/evaluate.py with the same multi-host flags on
the workdir. The test asserts on both processes' reports and on the shared
workdir: one set of metrics (process 0 writes), checkpoints, the final
metrics printed once, eval.json equal to the training run's final metrics.
"""

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_DEVICES = 2
XLA_FLAGS = (
    f"--xla_force_host_platform_device_count={LOCAL_DEVICES} "
    "--xla_cpu_collective_call_terminate_timeout_seconds=300"
    # Tiny programs: LLVM's expensive passes cost more compile time than they save.
    " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    # Single-threaded ops: one run hung (> 600 s) on the loaded 2-core machine, the
    # known remedy for a wedged Eigen pool; cause not confirmed (docs/scale_out.md).
    " --xla_cpu_multi_thread_eigen=false"
)
# Room on XLA:CPU's shared thunk pool for collectives that block (see test_parallel.py).
POOL_THREADS = str(4 * LOCAL_DEVICES)
pytestmark = pytest.mark.slow  # two processes train the tiny config


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _read(path: pathlib.Path) -> str:
  return path.read_text() if path.exists() else ""


def _launch(
    commands: list[list[str]], env: dict, logs: pathlib.Path, tag: str
) -> list[tuple[str, str]]:
  """Runs one process per command (one distributed runtime); returns their (stdout, stderr)."""
  procs = []
  with contextlib.ExitStack() as files:
    for i, command in enumerate(commands):  # output to files: no pipe can fill up and block
      out = files.enter_context(open(logs / f"{tag}_out{i}.txt", "w"))
      err = files.enter_context(open(logs / f"{tag}_err{i}.txt", "w"))
      procs.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=err))
    # A process that fails leaves the other waiting in the distributed runtime: stop it.
    deadline = time.monotonic() + 480
    try:
      while (
          any(p.poll() is None for p in procs)
          and time.monotonic() < deadline
          and not any(p.poll() not in (None, 0) for p in procs)
      ):
        time.sleep(0.5)
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
          p.wait()
  outs = [
      (_read(logs / f"{tag}_out{i}.txt"), _read(logs / f"{tag}_err{i}.txt"))
      for i in range(len(commands))
  ]
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    if p.returncode != 0:
      pytest.fail(f"{tag} process {i} failed (rc {p.returncode}):\n{err[-5000:]}")
  return outs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("mp") / "wd")
  logs = tmp_path_factory.mktemp("mp_logs")
  env = dict(
      os.environ, XLA_FLAGS=XLA_FLAGS, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, NPROC=POOL_THREADS
  )
  port = _free_port()
  outs = _launch(
      [[sys.executable, os.path.abspath(__file__), str(i), str(port), workdir] for i in range(2)],
      env,
      logs,
      "train",
  )
  reports = []
  for stdout, _ in outs:
    lines = stdout.strip().splitlines()
    reports.append({"report": json.loads(lines[-1]), "stdout": "\n".join(lines[:-1])})
  # launch/evaluate.py with the same multi-host flags, as a second two-process runtime.
  port = _free_port()
  evaluated = _launch(
      [
          [
              sys.executable,
              os.path.join(ROOT, "launch", "evaluate.py"),
              f"--workdir={workdir}",
              f"--coordinator_address=localhost:{port}",
              "--num_processes=2",
              f"--process_id={i}",
          ]
          for i in range(2)
      ],
      env,
      logs,
      "evaluate",
  )
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {
      "workdir": workdir,
      "reports": reports,
      "records": records,
      "evaluate_stdout": [out for out, _ in evaluated],
  }


def test_both_processes_see_one_runtime(run):
  for i, r in enumerate(run["reports"]):
    rep = r["report"]
    assert rep["process_index"] == i
    assert rep["process_count"] == 2
    assert rep["device_count"] == 2 * LOCAL_DEVICES
    assert rep["mesh"] == {"data": 2 * LOCAL_DEVICES, "model": 1}


def test_each_process_feeds_its_own_rows(run):
  for i, r in enumerate(run["reports"]):
    rep = r["report"]
    # 8 rows over 4 devices: 4 per process, 2 per device.
    assert rep["host_rows"] == [4 * i, 4 * i + 4]
    assert rep["local_rows_ok"]
    assert rep["global_sum"] == rep["expected_sum"]


def test_one_set_of_metrics(run):
  records = run["records"]
  finals = [r for r in records if r["stage"] == "final"]
  assert len(finals) == 1
  assert "teacher/test/NDCG@10" in finals[0]
  teacher = [r for r in records if r["stage"] == "teacher"]
  assert any("teacher/ce" in r for r in teacher)
  assert any("teacher/valid/NDCG@10" in r for r in teacher)
  keys = [(r["stage"], r["step"], tuple(sorted(r))) for r in records]
  assert len(keys) == len(set(keys)), "a record was written twice"
  # Only process 0 prints the final metrics.
  assert '"teacher/test/NDCG@10"' in run["reports"][0]["stdout"]
  assert "NDCG" not in run["reports"][1]["stdout"]


def test_evaluate_from_checkpoint_matches_training(run):
  # launch/evaluate.py on both processes: process 0 prints and writes eval.json, 1 is silent.
  with open(os.path.join(run["workdir"], "eval.json")) as f:
    evaluated = json.load(f)
  printed = run["evaluate_stdout"][0]  # gloo's connection lines come first
  assert json.loads(printed[printed.index("\n{") + 1 :]) == evaluated
  assert "NDCG" not in run["evaluate_stdout"][1]
  final = next(r for r in run["records"] if r["stage"] == "final")
  for k in ("HR@10", "NDCG@10", "MRR@20"):
    for split in ("valid", "test"):
      key = f"teacher/{split}/{k}"
      assert abs(evaluated[key] - final[key]) <= 1e-6, key


def test_checkpoints_across_processes(run):
  for which in ("latest", "best"):  # written by both processes through orbax
    assert os.listdir(os.path.join(run["workdir"], "teacher", which))
  for r in run["reports"]:
    rep = r["report"]
    assert rep["ckpt_item_shards_span_processes"]
    assert rep["adam_moments_split"]  # mu and nu of the table follow its layout
    assert rep["ckpt_equal"]
    assert rep["to_host_equal"]


# ---------------------------------------------------------------------------- worker side


def _worker(process_id: int, port: int, workdir: str) -> dict:
  import runpy

  sys.argv = [
      "train.py",
      "--config=configs/tiny.py",
      "--config.stages=('teacher',)",
      "--config.train.epochs=1",
      f"--workdir={workdir}",
      f"--coordinator_address=localhost:{port}",
      "--num_processes=2",
      f"--process_id={process_id}",
  ]
  sys.path.insert(0, os.path.join(ROOT, "launch"))
  try:
    runpy.run_path(os.path.join(ROOT, "launch", "train.py"), run_name="__main__")
  except SystemExit as e:
    if e.code not in (0, None):
      raise
  import jax
  import numpy as np
  import optax

  from ccrec import config as config_lib
  from ccrec import parallel
  from ccrec.checkpoint import Checkpointer
  from ccrec.train.state import TrainState

  defaults = config_lib.base_config().parallel
  rep = {
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "mesh": dict(parallel.default_mesh(defaults.data, defaults.model).shape),
  }

  # Per-host slicing: every process holds the same global batch, feeds its own rows.
  mesh = parallel.make_mesh()
  batch = {"items": np.arange(8 * 3, dtype=np.int32).reshape(8, 3)}
  rows = parallel.host_rows(mesh, 8)
  rep["host_rows"] = [rows.start, rows.stop]
  placed = parallel.shard_batch(batch, mesh)["items"]
  rep["local_rows_ok"] = all(
      np.array_equal(np.asarray(s.data), batch["items"][s.index]) for s in placed.addressable_shards
  )
  rep["global_sum"] = int(jax.jit(lambda x: x.sum())(placed))
  rep["expected_sum"] = int(batch["items"].sum())

  # Orbax across hosts: an item table split over a 1x4 mesh, i.e. across both processes.
  mesh = parallel.make_mesh(1, 4)
  params = {
      "items": {"embedding": np.arange(8 * 4, dtype=np.float32).reshape(8, 4)},
      "dense": np.ones((3,), np.float32),
  }
  state = parallel.place_state(TrainState.create({"params": params}, optax.adam(1e-2)), mesh)
  emb = state.params["items"]["embedding"]
  moments = [
      x
      for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
      if parallel.is_item_leaf(path)
  ]
  rep["adam_moments_split"] = len(moments) == 2 and all(x.sharding == emb.sharding for x in moments)
  rep["ckpt_item_shards_span_processes"] = (
      not emb.is_fully_addressable and len(emb.addressable_shards) == LOCAL_DEVICES
  )
  ckpt = Checkpointer(os.path.join(workdir, "roundtrip"))
  ckpt.save(1, state, {"epoch": 1})
  zeros = jax.tree.map(np.zeros_like, params)
  abstract = TrainState.create({"params": zeros}, optax.adam(1e-2))
  restored, meta = ckpt.restore(parallel.place_state(abstract, mesh))
  rep["ckpt_equal"] = bool(
      meta == {"epoch": 1}
      and all(
          np.array_equal(parallel.to_host(a), parallel.to_host(b))
          for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state))
      )
      and restored.params["items"]["embedding"].sharding == emb.sharding
  )
  rep["to_host_equal"] = bool(np.array_equal(parallel.to_host(emb), params["items"]["embedding"]))
  return rep


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  os.chdir(ROOT)
  report = _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
  print(json.dumps(report), flush=True)
