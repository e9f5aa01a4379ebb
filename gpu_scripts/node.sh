#!/usr/bin/env bash
# Runs one node's process of a multi-node job. Every node runs the same command.
# Usage: COORDINATOR=host:port NUM_NODES=N NODE_RANK=i gpu_scripts/node.sh COMMAND... (with --distributed)
set -euo pipefail
: "${COORDINATOR:?host:port of node 0 (any free port)}"
: "${NUM_NODES:?number of nodes}"
: "${NODE_RANK:?the rank of this node, 0..NUM_NODES-1}"
[ $# -gt 0 ] || { echo "usage: $0 COMMAND..." >&2; exit 2; }
cd "$(dirname "$0")/.."
export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_NODES" JAX_PROCESS_ID="$NODE_RANK"
mkdir -p logs
exec "$@" 2>&1 | tee "logs/node$NODE_RANK.log"
