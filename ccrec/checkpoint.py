"""Checkpoints: the only module of ccrec that imports orbax.

A stage's directory keeps two orbax CheckpointManagers, `latest/` (resume) and
`best/` (best on validation, what evaluation restores), each with one step.
Each checkpoint holds the state pytree and a JSON `meta` dict (epoch, early
stopping counters, metrics), so a resumed run continues exactly where the
last completed epoch left it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint is missing, corrupt or does not match the model."""


class Checkpointer:
  """Latest + best checkpoints of one training stage under `directory`."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False)
    self._managers = {
        name: ocp.CheckpointManager(os.path.join(self.directory, name), options=options)
        for name in ("latest", "best")
    }

  def latest_step(self, which: str = "latest") -> int | None:
    return self._managers[which].latest_step()

  def save(self, step: int, state: Any, meta: dict, *, best: bool = False) -> None:
    """Saves `state` as the latest checkpoint (and as the best one if `best`)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    for name in ("latest", "best") if best else ("latest",):
      manager = self._managers[name]
      manager.save(int(step), args=args, force=True)
      manager.wait_until_finished()

  def restore(self, abstract_state: Any, which: str = "latest") -> tuple[Any, dict] | None:
    """Restores into the structure of `abstract_state`; None if there is no checkpoint."""
    manager = self._managers[which]
    step = manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for corrupt or mismatched files.
      raise CheckpointError(
          f"cannot restore the {which} checkpoint at step {step} from "
          f"{os.path.join(self.directory, which)}: {type(e).__name__}: {e}. The checkpoint is "
          "corrupt or was written by a different model/dataset (item count, sizes).") from e
    return restored.state, dict(restored.meta)

  def close(self) -> None:
    for manager in self._managers.values():
      manager.close()
