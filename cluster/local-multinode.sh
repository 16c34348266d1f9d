#!/usr/bin/env bash
# A multi-node Ray cluster on one machine (head + 2 worker "nodes"), for trying cluster runs
# without a cluster. Each worker declares one logical GPU so geoseg places one model actor per
# "GPU" (the actors run on the CPU when there is no real GPU).
#   cluster/local-multinode.sh start      # then: RAY_ADDRESS=127.0.0.1:6380 geoseg run SPEC.yaml
#   cluster/local-multinode.sh stop
set -euo pipefail
port=${GEOSEG_RAY_PORT:-6380}
# Ray 2.5x+ turns token authentication on for `ray start --head` (token in ~/.ray/auth_token);
# every node and client must then say so too.
export RAY_AUTH_MODE=token
case "${1:-start}" in
  start)
    ray start --head --port "$port" --num-cpus 1 --dashboard-host 127.0.0.1 --dashboard-port 8265 --disable-usage-stats
    for i in 1 2; do
      # Separate raylets on one host: each needs its own ports.
      ray start --address "127.0.0.1:$port" --num-cpus 2 --num-gpus 1 \
        --node-manager-port $((port + 10 * i)) --object-manager-port $((port + 10 * i + 1)) \
        --min-worker-port $((20000 + 1000 * i)) --max-worker-port $((20999 + 1000 * i)) --disable-usage-stats
    done
    ray status --address "127.0.0.1:$port"
    echo "export RAY_ADDRESS=127.0.0.1:$port RAY_AUTH_MODE=token   # ray job submit: RAY_ADDRESS=http://127.0.0.1:8265"
    ;;
  stop)
    ray stop --force
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
