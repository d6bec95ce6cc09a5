"""Runs a launch script's main: quiet third-party logs, and ccrec's named errors as one line.

Every script that runs through `run` has `--verbose_libs` (third-party INFO logging such as
orbax's checkpoint bookkeeping, hidden by default: `ccrec.console.configure`).

`python launch/X.py ...` that fails on bad input (DataError, CheckpointError, WorkdirError,
ConfigError, BundleError, ...) prints `ErrorName: message` to stderr and exits with status 1;
with `-v 1` (absl's --verbosity) it prints the full traceback instead. Any other exception
(a bug) always prints its traceback.
"""

import sys

from absl import app, flags

from ccrec import console

_VERBOSE_LIBS = flags.DEFINE_bool(
    "verbose_libs", False, "Show third-party libraries' INFO logging (orbax, jax)."
)


def _named(error: BaseException) -> bool:
  """Whether `error` is one of ccrec's own error types (defined in a ccrec module)."""
  return any(cls.__module__.split(".")[0] == "ccrec" for cls in type(error).__mro__)


def run(main) -> None:
  """absl's app.run(main), with named errors printed alone (see the module docstring)."""

  def guarded(argv):
    verbose = flags.FLAGS.verbosity >= 1  # read before main changes the logging verbosity
    console.configure(verbose_libs=_VERBOSE_LIBS.value)
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      if verbose or not _named(e):
        raise
      print(f"{type(e).__name__}: {e}", file=sys.stderr)
      sys.exit(1)

  app.run(guarded)
