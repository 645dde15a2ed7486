#!/usr/bin/env bash
# Stop exactly the daemons cluster/start-local-slurm.sh started (PIDs in $STATE_DIR/pids/),
# slurmd first, munged last. Keeps the state folder, so a later start reuses the database.
#
# Environment: UNETFLOW_SLURM_STATE  state folder  [/tmp/unetflow-slurm]
set -euo pipefail

STATE_DIR="${UNETFLOW_SLURM_STATE:-/tmp/unetflow-slurm}"
PID_DIR="$STATE_DIR/pids"
STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)
GRACE_SECONDS=20

log() { echo "[stop-local-slurm] $*" >&2; }

# Print the recorded PID of daemon $1 if that process is alive and still runs $1.
recorded_pid() {
    local pidfile="$PID_DIR/$1.pid" pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]] || return 1
    echo "$pid"
}

# SIGTERM, then SIGKILL after GRACE_SECONDS.
stop_pid() {
    local pid=$1 deadline=$((SECONDS + GRACE_SECONDS))
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.2
    done
}

stop_daemon() {
    local name=$1 pid
    if pid=$(recorded_pid "$name"); then
        stop_pid "$pid"
        log "stopped $name (pid $pid)"
    fi
    rm -f "$PID_DIR/$name.pid"
}

for daemon in "${STOP_ORDER[@]}"; do
    stop_daemon "$daemon"
done
