#!/usr/bin/env bash
# Single host, all GPUs: one process drives every local GPU through one jitted step
# (config.parallel.data=-1 = all devices; the batch is split along the 'data' mesh axis).
#
#   pip install -e . "jax[cuda12]"            # once: the CUDA build of the same jax version
#   launch/gpu.sh configs/eodrec.py runs/eodrec [--config.train.batch_size=512 \
#       --config.distill.batch_size=512 ...]   # distillation has its own batch (0 = train's)
#   launch/gpu.sh configs/eodrec.py runs/big --config.parallel.model=2   # split the item axis too
#
# train.batch_size, eval.batch_size and distill.batch_size must be multiples of the
# data-axis size (#GPUs / parallel.model); parallel.model > 1 needs
# (num_items + 1) % parallel.model == 0. Both are checked before anything compiles, with an
# error naming the field. Rerunning resumes.
# Several GPU hosts: run launch/train.py on each with --coordinator_address=HOST0:PORT
# --num_processes=N --process_id=I (docs/scale_out.md).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
cd "$(dirname "$0")/.."
# CUDA_VISIBLE_DEVICES selects the GPUs (all visible ones are used); XLA preallocates 75% of
# each GPU's memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise.
exec python launch/train.py --config="$config" --workdir="$workdir" "$@"
