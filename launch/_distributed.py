"""Multi-host flags shared by launch/train.py and launch/evaluate.py (docs/scale_out.md).

Flags, not config fields: config.json must be the same for every process and every
resumption. On TPU pod slices --distributed alone is enough (everything is auto-detected).
"""

from absl import flags

_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() before touching devices."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0 ('' = auto-detect, e.g. on TPU)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes (0 = auto).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (-1 = auto).")


def maybe_initialize() -> None:
  """jax.distributed.initialize() when --distributed or --coordinator_address is given."""
  if _DISTRIBUTED.value or _COORDINATOR.value:
    from ccrec import parallel

    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
