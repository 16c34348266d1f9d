#!/usr/bin/env bash
# A multi-node Ray cluster on one machine (a head and 2 worker "nodes"), for trying cluster runs
# without a cluster. Each worker declares one logical GPU so geoseg places one model actor per
# "GPU" (the actors run on the CPU when there is no real GPU).
#   cluster/local-multinode.sh start      # then: geoseg run SPEC --address 127.0.0.1:6380
#   cluster/local-multinode.sh stop       # stops this recipe's cluster only
# It uses the repository's .venv (no need to activate it), or GEOSEG_PYTHON.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${GEOSEG_PYTHON:-$here/.venv/bin/python}
if [ ! -x "$python" ]; then
  echo "local-multinode.sh: no Python at $python; create the venv (see README) or set GEOSEG_PYTHON" >&2
  exit 2
fi
ray() { "$python" -m ray.scripts.scripts "$@"; }
port=${GEOSEG_RAY_PORT:-6380}
dashboard=${GEOSEG_DASHBOARD_PORT:-8266}
state=${TMPDIR:-/tmp}/geoseg-multinode-$port.session
# Ray 2.5x+ turns token authentication on for `ray start --head` (token in ~/.ray/auth_token);
# every node and client must then say so too.
export RAY_AUTH_MODE=token
case "${1:-start}" in
  start)
    if [ -f "$state" ]; then
      echo "local-multinode.sh: a cluster of this recipe runs on port $port ($(cat "$state")); stop it first" >&2
      exit 2
    fi
    ray start --head --port "$port" --num-cpus 1 --dashboard-host 127.0.0.1 --dashboard-port "$dashboard" \
      --disable-usage-stats
    # The session folder names every process of this cluster (and of no other): stop kills those only.
    gcs=$(pgrep -af "gcs_server.*--gcs_server_port=$port" | head -1)
    session=$(printf '%s\n' "$gcs" | tr ' ' '\n' | sed -n 's/^--session-dir=//p' | head -1)
    if [ -z "$session" ]; then
      echo "local-multinode.sh: started, but found no GCS on port $port to record; stop it with ray stop" >&2
      exit 1
    fi
    echo "$session" > "$state"
    for i in 1 2; do
      # Separate raylets on one host: each needs its own ports.
      ray start --address "127.0.0.1:$port" --num-cpus 2 --num-gpus 1 \
        --node-manager-port $((port + 10 * i)) --object-manager-port $((port + 10 * i + 1)) \
        --min-worker-port $((20000 + 1000 * i)) --max-worker-port $((20999 + 1000 * i)) --disable-usage-stats
    done
    ray status --address "127.0.0.1:$port"
    echo "export RAY_ADDRESS=127.0.0.1:$port RAY_AUTH_MODE=token   # geoseg submit: --address http://127.0.0.1:$dashboard"
    ;;
  stop)
    if [ ! -f "$state" ]; then
      echo "local-multinode.sh: no cluster of this recipe runs on port $port; nothing to stop"
      exit 0
    fi
    session=$(cat "$state")
    pkill -TERM -f -- "$session" || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      pgrep -f -- "$session" > /dev/null || break
      sleep 1
    done
    pkill -KILL -f -- "$session" || true
    rm -f "$state"
    echo "stopped the cluster of $session"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
