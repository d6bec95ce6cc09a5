"""Meshes, shardings and putting batches and states on devices (data + item parallelism).

ccrec scales out with JAX's own SPMD machinery: one `jax.jit`-compiled step
runs on a device mesh and the arrays it receives carry `NamedSharding`s; XLA's
partitioner inserts the collectives. No `pmap`, no hand-written all-reduce.

The mesh has two axes (config.parallel):
  'data'  (parallel.data, -1 = all devices left over): the batch is split along
          its first dimension; parameters and optimizer states are replicated,
          so the gradient all-reduce over 'data' is inserted by XLA;
  'model' (parallel.model, default 1): the item axis. The leaves named
          `ITEM_LEAVES` under an 'items' module -- the teacher's table
          params['items']['embedding'] [V+1, d], the student's integer codes
          consts['codes']['items']['codes'] [V+1, M] and their optimizer
          moments -- are split along their first (item) dimension. Logits
          [N, V+1] then come out of `s @ table.T` split along their last axis
          by sharding propagation (a test checks that the compiled teacher and
          distillation steps never gather an item-sized array whole), and the
          softmax normaliser / rank counts reduce over 'model'. Full-softmax CE
          and full-ranking evaluation stay exact.

Decisions (see docs/scale_out.md):
  * Axis types: `AxisType.Auto` on both axes. In jax 0.10 `jax.make_mesh`
    defaults to `AxisType.Explicit` ("sharding in types"), under which the
    data-parallel gradient of a replicated parameter is a sharding type error
    unless every output sharding is written out. With Auto axes the input
    shardings (set here, by `place_state` and `shard_batch`) propagate through
    the unchanged steps, and the outputs come back with the input shardings,
    so the donated state keeps its layout and each step compiles once per mesh.
  * Uneven item shards: a jax.Array cannot be split unevenly
    (`jax.device_put` and jit outputs raise IndivisibleError), and padding the
    catalog would add items to the softmax and the ranking unless the models
    masked them. So parallel.model > 1 requires (num_items + 1) % parallel.model
    == 0 and `check_sizes` raises `ItemShardingError` naming the sizes and the
    model-axis sizes that would work.
  * Several processes: every process iterates the same global batches (same
    seed, same order) and transfers only the rows of its own devices
    (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
MODEL = "model"
ITEM_LEAVES = ("embedding", "codes")  # leaf names under an 'items' module, split along 'model'


class BatchSizeError(ValueError):
  """A batch does not split evenly over the mesh's data axis."""


class ItemShardingError(ValueError):
  """The item axis does not split evenly over the mesh's model axis."""


class MeshError(ValueError):
  """config.parallel does not fit the devices."""


# ---------------------------------------------------------------------------- meshes


def make_mesh(data: int = -1, model: int = 1, devices=None) -> Mesh:
  """A ('data', 'model') mesh of Auto axes over `devices` (default: all, every process).

  Args:
    data: size of the data axis; -1 = number of devices // model.
    model: size of the item (model) axis.
    devices: optional device list (tests); jax.devices() otherwise.

  Raises:
    MeshError naming parallel.data / parallel.model and the device count.
  """
  n = len(devices) if devices is not None else jax.device_count()
  if model < 1 or n % model:
    raise MeshError(
        f"config.parallel.model={model} must be >= 1 and divide the number of "
        f"devices ({n}, over {jax.process_count()} process(es))"
    )
  if data == -1:
    data = n // model
  if data < 1 or data * model != n:
    raise MeshError(
        f"config.parallel.data={data} x config.parallel.model={model} must equal the "
        f"number of devices ({n}, over {jax.process_count()} process(es)); "
        "parallel.data=-1 takes all devices left over"
    )
  axis_types = (AxisType.Auto, AxisType.Auto)
  if devices is None:
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(data, model), (DATA, MODEL), axis_types=axis_types)


def default_mesh(data: int = -1, model: int = 1) -> Mesh | None:
  """`make_mesh(data, model)` over all devices, or None on a single device with model == 1."""
  if jax.device_count() == 1 and model == 1:
    return None
  return make_mesh(data, model)


def data_size(mesh: Mesh | None) -> int:
  return 1 if mesh is None else mesh.shape[DATA]


def model_size(mesh: Mesh | None) -> int:
  return 1 if mesh is None else mesh.shape[MODEL]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch arrays: first dimension along 'data', the rest whole."""
  return NamedSharding(mesh, P(DATA))


def item_sharding(mesh: Mesh) -> NamedSharding:
  """Item-indexed arrays [V+1, ...]: first dimension along 'model'."""
  return NamedSharding(mesh, P(MODEL))


# ---------------------------------------------------------------------------- checks


def check_batch_size(batch_size: int, mesh: Mesh | None, field: str) -> None:
  """Raises BatchSizeError unless `batch_size` (config.`field`) splits over the data axis."""
  k = data_size(mesh)
  if batch_size % k:
    raise BatchSizeError(
        f"config.{field}={batch_size} is not divisible by the mesh's data axis ({k} = "
        f"{jax.device_count()} devices / parallel.model={model_size(mesh)}): set config.{field} "
        f"to a multiple of {k}"
    )


def check_items(num_items: int, mesh: Mesh | None) -> None:
  """Raises ItemShardingError unless the V+1 item rows split evenly over the model axis."""
  m = model_size(mesh)
  if (num_items + 1) % m:
    n = mesh.devices.size
    ok = [k for k in range(1, n + 1) if n % k == 0 and (num_items + 1) % k == 0]
    raise ItemShardingError(
        f"config.parallel.model={m} splits the item axis, but num_items + 1 = {num_items + 1} "
        f"(row 0 is padding) is not divisible by {m}: jax arrays cannot be sharded unevenly. "
        f"Model-axis sizes that fit this catalog on {n} devices: {ok}"
    )


def check_sizes(batch_sizes: Mapping[str, int], mesh: Mesh | None, num_items: int) -> None:
  """All size checks of a run, before anything is compiled.

  `batch_sizes`: config field -> batch size, checked in order (the field names the error).
  """
  for field, batch_size in batch_sizes.items():
    check_batch_size(batch_size, mesh, field)
  check_items(num_items, mesh)


# ---------------------------------------------------------------------------- batches


def host_rows(mesh: Mesh, global_rows: int) -> slice:
  """The contiguous rows of a global batch that this process's devices hold."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_rows,))
  starts = sorted({idx[0].indices(global_rows)[0] for idx in index_map.values()})
  stops = sorted({idx[0].indices(global_rows)[1] for idx in index_map.values()})
  rows = slice(starts[0], stops[-1])
  covered = sum(b - a for a, b in zip(starts, stops))
  if covered != rows.stop - rows.start:
    raise MeshError(
        f"this process's devices hold non-contiguous batch rows {starts}..{stops}; "
        "build the mesh with jax.make_mesh (process-major device order)"
    )
  return rows


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Host batch (dict of [B, ...] arrays, the GLOBAL batch) -> arrays split along 'data'.

  With several processes every process passes the same global batch and
  transfers only the rows of its own devices.

  Raises:
    BatchSizeError if B is not a multiple of the data-axis size.
  """
  sharding = batch_sharding(mesh)
  k = data_size(mesh)
  out = {}
  for name, x in batch.items():
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] % k:
      raise BatchSizeError(
          f"batch[{name!r}] has {x.shape[0] if x.ndim else 0} rows, not a multiple of the mesh's "
          f"data axis ({k}): config.train.batch_size, eval.batch_size and distill.batch_size "
          f"must be multiples of {k} ({jax.device_count()} devices / "
          f"parallel.model={model_size(mesh)})"
      )
    if jax.process_count() == 1:
      out[name] = jax.device_put(x, sharding)
    else:
      rows = host_rows(mesh, x.shape[0])
      out[name] = jax.make_array_from_process_local_data(sharding, x[rows], x.shape)
  return out


# ---------------------------------------------------------------------------- states


def is_item_leaf(path: tuple) -> bool:
  """True for a leaf named in ITEM_LEAVES directly under an 'items' module."""
  names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
  return len(names) >= 2 and names[-1] in ITEM_LEAVES and names[-2] == "items"


def state_shardings(state: Any, mesh: Mesh) -> Any:
  """NamedShardings for every leaf of a state pytree (TrainState, DistillState, variables).

  Item leaves are split along 'model' when the model axis has more than one
  device; everything else (and every item leaf when model == 1) is replicated.
  """
  shard_items = model_size(mesh) > 1

  def one(path, leaf):
    if shard_items and is_item_leaf(path) and np.ndim(leaf) >= 1:
      if np.shape(leaf)[0] % model_size(mesh):
        check_items(np.shape(leaf)[0] - 1, mesh)
      return item_sharding(mesh)
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(one, state)


def create_sharded(make: Callable[..., Any], mesh: Mesh | None, *args: Any) -> Any:
  """`make(*args)`, a pure function that builds a state (init + optimizer state), computed
  straight into the layout `state_shardings` gives it.

  The shapes come from `jax.eval_shape(make, *args)`; `make` then runs under `jax.jit` with
  those shardings as `out_shardings`, so each device writes its own shard and an item
  table split over 'model' is never whole on one device (big_vision's sharded init).
  Random values do not depend on the sharding (jax's partitionable threefry), so the
  result equals `make(*args)` on one device. `make` must return the same static parts
  (e.g. the same optimizer object) on every call. `mesh` None: `make(*args)` as it is.
  """
  if mesh is None:
    return make(*args)
  shardings = state_shardings(jax.eval_shape(make, *args), mesh)
  return jax.jit(make, out_shardings=shardings)(*args)


def place_state(state: Any, mesh: Mesh) -> Any:
  """Puts a state pytree on the mesh with `state_shardings`.

  In a multi-process run every process holds the same host values (same
  seed); each transfers the shards of its own devices.
  """
  shardings = state_shardings(state, mesh)
  if jax.process_count() == 1:
    return jax.device_put(state, shardings)

  def put(x, sharding):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.jit(lambda y: y, out_shardings=sharding)(x)  # already global: reshard on device
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree.map(put, state, shardings)


def to_host(x: Any) -> Any:
  """Device arrays -> numpy, gathering shards held by other processes if needed."""

  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)

  return jax.tree.map(one, x)


# ---------------------------------------------------------------------------- processes


def initialize_distributed(
    coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
  """`jax.distributed.initialize`; empty/0/-1 arguments are auto-detected (TPU, SLURM, ...).

  Must run before anything queries jax devices.
  """
  jax.distributed.initialize(
      coordinator_address=coordinator_address or None,
      num_processes=num_processes or None,
      process_id=None if process_id < 0 else process_id,
  )


def describe(mesh: Mesh | None) -> str:
  if mesh is None:
    return f"single device ({jax.devices()[0].platform})"
  return (
      f"mesh data={data_size(mesh)} x model={model_size(mesh)} over {mesh.devices.size} "
      f"{jax.devices()[0].platform} devices, {jax.process_count()} process(es), "
      f"{math.prod(mesh.devices.shape) // jax.process_count()} per process"
  )
