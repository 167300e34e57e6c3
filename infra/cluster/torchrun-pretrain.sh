#!/usr/bin/env bash
# Multi-node pretraining without SLURM: run this on every node (same NNODES, NODE_RANK 0..NNODES-1, MASTER_ADDR).
# Lightning picks up torchrun's environment; set train.num_nodes / train.devices / train.strategy in params.yaml.
set -euo pipefail
: "${NNODES:?}" "${NODE_RANK:?}" "${MASTER_ADDR:?}"
exec .venv/bin/torchrun --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "${GPUS_PER_NODE:-8}" \
  --master-addr "$MASTER_ADDR" --master-port "${MASTER_PORT:-29500}" -m stages pretrain
