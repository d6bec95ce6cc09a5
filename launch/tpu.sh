#!/usr/bin/env bash
# Multi-host TPU pod slice: the SAME command on every worker. jax.distributed.initialize()
# finds the coordinator, the process count and this worker's index from the TPU metadata,
# the mesh spans every chip of the slice, and each worker feeds its rows of each batch.
#
#   # once per worker: code, environment, data (or point config.data.data_dir at a shared mount)
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="
#     cd ccrec && pip install -e . 'jax[tpu]' && python launch/prepare_data.py --dataset=ml-100k"
#   # train: every worker runs the same line
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="
#     cd ccrec && launch/tpu.sh configs/eodrec.py /mnt/shared/runs/eodrec"
#
# WORKDIR must be one directory seen by every worker (NFS / Filestore / GCS FUSE mount):
# orbax writes each worker's shards there and process 0 writes config.json and metrics.jsonl.
# Only worker 0 prints the final metrics.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
cd "$(dirname "$0")/.."
exec python launch/train.py --config="$config" --workdir="$workdir" --distributed "$@"
