#!/usr/bin/env bash
# Runs N processes of rsc_jax.main on this machine, joined through a local
# coordinator, each with the same ARGS: a real multi-host run for testing.
#
#   launch/local_multiprocess.sh N ARGS...
#   launch/local_multiprocess.sh 2 --config=configs/digits.py --workdir=runs/mp --num_cpu_devices=2
#
# Environment: PORT (coordinator port, default: a free one), LOGDIR (per-process
# logs, default WORKDIR-less /tmp/rsc_mp_logs.$$). Exits non-zero if any process fails.
set -uo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N ARGS...   (N >= 1 processes of python -m rsc_jax.main ARGS)" >&2
  exit 2
fi
N=$1; shift
cd "$(dirname "$0")/.."
PORT=${PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
LOGDIR=${LOGDIR:-/tmp/rsc_mp_logs.$$}
mkdir -p "$LOGDIR"
pids=()
for ((i = 0; i < N; i++)); do
  python -m rsc_jax.main --coordinator_address="localhost:$PORT" --num_processes="$N" --process_id="$i" "$@" \
    >"$LOGDIR/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for ((i = 0; i < N; i++)); do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; its log ($LOGDIR/process_$i.log) ends with:" >&2
    tail -n 20 "$LOGDIR/process_$i.log" >&2
    status=1
  fi
done
[ $status -eq 0 ] && tail -n 3 "$LOGDIR/process_0.log"
exit $status
