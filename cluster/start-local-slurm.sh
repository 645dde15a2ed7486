#!/usr/bin/env bash
# Start a real single-node SLURM cluster on localhost, as root, without systemd:
# munged, a private MariaDB, slurmdbd, slurmctld and slurmd (node "localhost" with two placeholder
# GPUs: sbatch --gpus jobs schedule and are accounted, but there is no GPU behind them).
# Installs missing Debian packages and snakemake-executor-plugin-slurm first.
# Idempotent: daemons recorded as running are left alone. PIDs of the daemons
# it starts are written to $STATE_DIR/pids/; cluster/stop-local-slurm.sh stops exactly those.
#
# Environment (all optional):
#   UNETFLOW_SLURM_STATE    state folder (DB datadir, spool, logs, pids)  [/tmp/unetflow-slurm]
#   UNETFLOW_SLURM_DB_PORT  TCP port of the private MariaDB on 127.0.0.1 [3307]
#   PYTHON                  the Python whose pip gets the executor plugin  [python3]
set -euo pipefail

STATE_DIR="${UNETFLOW_SLURM_STATE:-/tmp/unetflow-slurm}"
DB_PORT="${UNETFLOW_SLURM_DB_PORT:-3307}"
PYTHON="${PYTHON:-python3}"
CLUSTER=unetflow
ACCOUNT=unetflow
PARTITION=debug
MIN_JOB_AGE=300
GPUS=2   # placeholder GPUs the node declares (gres.conf)
PLUGIN_VERSION=2.8.0
CONF_MARKER="# Written by unetflow cluster/start-local-slurm.sh"
PACKAGES=(munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins
          slurmdbd slurm-wlm-mysql-plugin mariadb-server)

PID_DIR="$STATE_DIR/pids"
LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"
DB_DIR="$STATE_DIR/mysql"
DB_SOCKET="$RUN_DIR/mariadbd.sock"
GPU_DIR="$STATE_DIR/gpus"
GPU_FILES="$GPU_DIR/gpu[0-$((GPUS - 1))]"
TEMPLATE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/templates"

log() { echo "[start-local-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
}

install_missing_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    log "installing ${missing[*]}"
    apt-get update -qq
    forbid_service_starts
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian's maintainer scripts must not start services (we start our own daemons):
# a policy-rc.d that denies them, removed on exit when this script created it.
forbid_service_starts() {
    local policy=/usr/sbin/policy-rc.d
    [[ -e $policy ]] && return
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    trap "rm -f $policy" EXIT
}

install_executor_plugin() {
    local installed
    installed=$("$PYTHON" -m pip show snakemake-executor-plugin-slurm 2>/dev/null | sed -n 's/^Version: //p' || true)
    [[ $installed == "$PLUGIN_VERSION" ]] && return
    log "pip-installing snakemake-executor-plugin-slurm==$PLUGIN_VERSION"
    "$PYTHON" -m pip install -q "snakemake-executor-plugin-slurm==$PLUGIN_VERSION"
}

prepare_dirs() {
    mkdir -p "$PID_DIR" "$LOG_DIR" "$RUN_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" /etc/slurm
    install -d -o munge -g munge -m 0755 /run/munge
}

# Render a template from cluster/templates, replacing @NAME@ by the shell variable NAME.
render_template() {
    local text
    text=$(<"$TEMPLATE_DIR/$1")
    for name in CONF_MARKER CLUSTER PARTITION STATE_DIR LOG_DIR RUN_DIR MIN_JOB_AGE NODE_HARDWARE GPUS GPU_FILES DB_PORT DB_PASSWORD; do
        text=${text//@$name@/${!name:-}}
    done
    printf '%s\n' "$text"
}

# Write $2 to file $1 unless a foreign (not ours) file is already there; a changed file sets CONFIG_CHANGED.
write_owned_config() {
    local path=$1 content=$2
    if [[ -e $path ]] && ! grep -qF "$CONF_MARKER" "$path"; then
        die "$path exists and was not written by this script; move it away first"
    fi
    [[ -e $path && $(<"$path") == "$content" ]] || CONFIG_CHANGED=1
    printf '%s\n' "$content" > "$path"
}

# Slurm's gres/gpu drops GPUs without File= ("Removing file-less GPU"), and slurmd wants character devices:
# the placeholders are copies of /dev/null (c 1 3). Nothing opens them (task/none: no device cgroup); a job
# granted GPU k gets CUDA_VISIBLE_DEVICES=k from the trailing number.
make_gpu_placeholders() {
    mkdir -p "$GPU_DIR"
    for ((k = 0; k < GPUS; k++)); do
        [[ -c $GPU_DIR/gpu$k ]] || mknod -m 0666 "$GPU_DIR/gpu$k" c 1 3
    done
}

node_hardware() {
    # "CPUs=2 Boards=1 ... RealMemory=24105" from the first line of `slurmd -C`, without
    # a Gres= (printed where GPUs are autodetected; the templates declare the placeholder GPUs)
    slurmd -C | sed -n '1{s/^NodeName=[^ ]* //;s/ Gres=[^ ]*//;p}'
}

write_slurm_configs() {
    NODE_HARDWARE=$(node_hardware)
    write_owned_config /etc/slurm/slurm.conf "$(render_template slurm.conf.in)"
    chmod 0644 /etc/slurm/slurm.conf
    make_gpu_placeholders
    write_owned_config /etc/slurm/gres.conf "$(render_template gres.conf.in)"
    chmod 0644 /etc/slurm/gres.conf
    DB_PASSWORD=$(db_password)
    write_owned_config /etc/slurm/slurmdbd.conf "$(render_template slurmdbd.conf.in)"
    chmod 0600 /etc/slurm/slurmdbd.conf
}

db_password() {
    local file="$STATE_DIR/db.password"
    [[ -s $file ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$file")
    cat "$file"
}

# True when $PID_DIR/$1.pid names a live process whose command is $1.
daemon_alive() {
    local pidfile="$PID_DIR/$1.pid" pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]]
}

# start_daemon NAME CMD...: run CMD (which must exec NAME in the foreground) detached, record its PID.
start_daemon() {
    local name=$1; shift
    if daemon_alive "$name"; then
        log "$name already running (pid $(<"$PID_DIR/$name.pid"))"
        return
    fi
    setsid "$@" </dev/null >>"$LOG_DIR/$name.out" 2>&1 &
    echo $! > "$PID_DIR/$name.pid"
    log "started $name (pid $!)"
}

# wait_until DESCRIPTION SECONDS CMD...: poll CMD every 0.2 s until it succeeds.
wait_until() {
    local what=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what (logs: $LOG_DIR)"
        sleep 0.2
    done
}

munge_works() { munge -n </dev/null | unmunge >/dev/null; }

start_munge() {
    if munge_works 2>/dev/null; then
        log "munge already answers"
        return
    fi
    start_daemon munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
    wait_until munged 20 munge_works
}

db_sql() { mariadb --no-defaults --socket="$DB_SOCKET" -u root -e "$1"; }

start_mariadb() {
    if [[ ! -d $DB_DIR/mysql ]]; then
        log "initialising MariaDB datadir $DB_DIR"
        mariadb-install-db --no-defaults --datadir="$DB_DIR" --user=root \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG_DIR/mariadb-install.out" 2>&1
    fi
    start_daemon mariadbd mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
        --socket="$DB_SOCKET" --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --pid-file="$RUN_DIR/mariadbd.pid" --log-error="$LOG_DIR/mariadb.err" \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900
    wait_until MariaDB 60 db_sql "SELECT 1"
    db_sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(db_password)';
            ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(db_password)';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurmdbd() {
    start_daemon slurmdbd slurmdbd -D
    wait_until slurmdbd 60 sacctmgr -n show cluster
}

# sacctmgr exits 1 on a duplicate add, so every add is guarded by a lookup.
register_accounting() {
    [[ -n $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]] ||
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    [[ -n $(sacctmgr -n -P show account "$ACCOUNT" format=account) ]] ||
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="unetflow test account" organization=unetflow >/dev/null
    [[ -n $(sacctmgr -n -P show assoc where cluster="$CLUSTER" account="$ACCOUNT" user=root format=user) ]] ||
        sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
}

node_state() { sinfo -h -n localhost -o %T 2>/dev/null; }
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; }

start_slurm_daemons() {
    if [[ -n ${CONFIG_CHANGED:-} ]] && daemon_alive slurmctld; then
        log "WARNING: /etc/slurm changed while SLURM runs with the old settings; to apply them run" \
            "cluster/stop-local-slurm.sh, then this script again"
    fi
    start_daemon slurmctld slurmctld -D
    wait_until slurmctld 60 scontrol ping
    start_daemon slurmd slurmd -D -N localhost
    wait_until "slurmd to register" 30 sinfo -h -n localhost
    if ! node_ready; then
        # A node left DOWN/DRAIN by an earlier run comes back here.
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    fi
    wait_until "node localhost to become idle" 60 node_ready
}

main() {
    require_root
    install_missing_packages
    install_executor_plugin
    prepare_dirs
    write_slurm_configs
    start_munge
    start_mariadb
    start_slurmdbd
    register_accounting
    start_slurm_daemons
    log "cluster '$CLUSTER' is up: partition '$PARTITION', account '$ACCOUNT', state in $STATE_DIR"
}

main "$@"
