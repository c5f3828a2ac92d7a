#!/usr/bin/env bash
# Single-node Slurm cluster on loopback for larsbench's test suite and CI.
#
#   bash slurm/local_cluster.sh start    install (apt) if needed, start, wait for an idle node
#   bash slurm/local_cluster.sh stop     cancel jobs, stop the daemons this script started
#   bash slurm/local_cluster.sh status   print sinfo; exit 0 only if the cluster is healthy
#
#   bash slurm/local_cluster.sh start|stop|status --nodes N   the same for a cluster of N >= 2
#       nodes on this machine, each in its own network namespace; `link NODE` and
#       `shape RATE|off` reach its nodes' links (slurm/local_nodes.sh)
#
# Everything (config, munge key and socket, state, spool, logs, pid files) lives in one
# state dir, ${LARSBENCH_SLURM_DIR:-/tmp/larsbench-slurm}, and /etc/slurm is left alone:
# clients find the cluster through SLURM_CONF=<state dir>/slurm.conf, which `start` (and a
# healthy `status`) print as an `export` line. Jobs inherit SLURM_CONF from the submitting
# shell (sbatch/srun export the environment by default), so srun inside a batch job works.
#
# Tunables (environment): LARSBENCH_SLURM_DIR, LARSBENCH_SLURM_CPUS (default: nproc; more
# than the machine has is allowed, see config_overrides below), LARSBENCH_SLURM_MEM_MB
# (default: what `slurmd -C` detects), LARSBENCH_SLURM_CTLD_PORT / LARSBENCH_SLURM_SLURMD_PORT
# (default 6817 / 6818, change them if a real Slurm runs on the machine),
# LARSBENCH_SLURM_START_TIMEOUT (seconds, default 60).
#
# Needs root: apt, and slurmd must be root to run jobs as the user who submitted them.
set -euo pipefail

STATE_DIR="${LARSBENCH_SLURM_DIR:-/tmp/larsbench-slurm}"
CLUSTER_NAME="larsbench"
NODE_NAME="localhost"
CTLD_PORT="${LARSBENCH_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${LARSBENCH_SLURM_SLURMD_PORT:-6818}"
START_TIMEOUT="${LARSBENCH_SLURM_START_TIMEOUT:-60}"

CONF="$STATE_DIR/slurm.conf"
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_KEY="$MUNGE_DIR/munge.key"
MUNGE_SOCKET_DIR="$STATE_DIR/munge-run"
MUNGE_SOCKET="$MUNGE_SOCKET_DIR/munge.socket"
CTLD_STATE="$STATE_DIR/ctld-state"
SLURMD_SPOOL="$STATE_DIR/slurmd-spool"
LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"

source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"

render_conf() {
    local cpus mem
    cpus="${LARSBENCH_SLURM_CPUS:-$(nproc)}"
    mem="${LARSBENCH_SLURM_MEM_MB:-$(detected_mem_mb)}"
    cat <<EOF
# Written by slurm/local_cluster.sh; rewritten (and the daemons restarted) when it changes.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmdLogFile=$LOG_DIR/slurmd.log
EOF
    # A dead slurmd is noticed after 30 s instead of the default 300 s.
    render_common_conf 30
    cat <<EOF
NodeName=$NODE_NAME NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

# --- health -------------------------------------------------------------------------------

ctld_ok() {
    pid_alive "$RUN_DIR/slurmctld.pid" slurmctld &&
        SLURM_CONF=$CONF timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'
}

slurmd_ok() { pid_alive "$RUN_DIR/slurmd.pid" slurmd; }

node_state() {
    SLURM_CONF=$CONF timeout 10 sinfo -h -N -n "$NODE_NAME" -o '%T' 2>/dev/null | head -n1
}

# Usable = accepts jobs. allocated/mixed/completing count: jobs may be running already.
node_usable() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

healthy() { munge_ok && ctld_ok && slurmd_ok && node_usable; }

# One line on stdout, for `eval "$(bash slurm/local_cluster.sh start)"` or a regex on
# SLURM_CONF=; everything else goes to stderr.
print_env_line() {
    printf 'export LARSBENCH_SLURM_DIR=%q SLURM_CONF=%q\n' "$STATE_DIR" "$CONF"
}

# --- commands -----------------------------------------------------------------------------

stop_all() {
    # Jobs left behind by a stopped slurmd keep running as orphaned slurmstepd processes, so
    # cancel them while the controller can still do it.
    if ctld_ok && slurmd_ok; then
        local jobs=()
        mapfile -t jobs < <(SLURM_CONF=$CONF squeue -h -o '%A' 2>/dev/null || true)
        if ((${#jobs[@]} > 0)); then
            log "cancelling jobs: ${jobs[*]}"
            SLURM_CONF=$CONF scancel "${jobs[@]}" 2>/dev/null || true
            local i
            for ((i = 0; i < 30; i++)); do
                [[ -z $(SLURM_CONF=$CONF squeue -h -t running,completing -o '%A' 2>/dev/null) ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_daemon "$RUN_DIR/slurmd.pid" slurmd
    stop_daemon "$RUN_DIR/slurmctld.pid" slurmctld
    stop_daemon "$RUN_DIR/munged.pid" munged
}

cmd_start() {
    install_packages

    local new_conf
    new_conf=$(render_conf)
    if [[ -f $CONF && $(<"$CONF") == "$new_conf" ]] && healthy; then
        log "already running"
        print_env_line
        return 0
    fi

    prepare_dirs "$SLURMD_SPOOL"
    if [[ ! -f $CONF || $(<"$CONF") != "$new_conf" ]]; then
        # Daemons read slurm.conf only at start; restart them all on a changed config so
        # clients and daemons agree.
        [[ -f $CONF ]] && { log "configuration changed, restarting"; stop_all; }
        printf '%s\n' "$new_conf" >"$CONF"
    fi
    drop_foreign_state

    start_munge

    if ! ctld_ok; then
        stop_daemon "$RUN_DIR/slurmctld.pid" slurmctld
        spawn_daemon "$LOG_DIR/slurmctld.out" slurmctld -f "$CONF"
        wait_pidfile "$RUN_DIR/slurmctld.pid" slurmctld 15 ||
            { tail_logs; die "slurmctld did not start"; }
    fi

    if ! slurmd_ok; then
        rm -f "$RUN_DIR/slurmd.pid"
        # -N: the node is called localhost whatever the machine's hostname is.
        spawn_daemon "$LOG_DIR/slurmd.out" slurmd -f "$CONF" -N "$NODE_NAME"
        wait_pidfile "$RUN_DIR/slurmd.pid" slurmd 15 ||
            { tail_logs; die "slurmd did not start"; }
    fi

    local deadline=$((SECONDS + START_TIMEOUT)) state resumed=0
    while :; do
        if healthy; then break; fi
        state=$(node_state || true)
        # A node that was down/drained when slurmd was last stopped (e.g. killed) and has
        # not come back by itself: its slurmd is up now, so put it back in service.
        if ((resumed == 0)) && [[ $state =~ ^(down|drain|drained|draining|fail) ]] && slurmd_ok; then
            SLURM_CONF=$CONF scontrol update nodename="$NODE_NAME" state=resume 2>/dev/null || true
            resumed=1
        fi
        if ((SECONDS >= deadline)); then
            log "node not usable after ${START_TIMEOUT}s (state: ${state:-unknown})"
            SLURM_CONF=$CONF sinfo -N -l >&2 2>/dev/null || true
            SLURM_CONF=$CONF scontrol show node "$NODE_NAME" >&2 2>/dev/null || true
            tail_logs
            exit 1
        fi
        sleep 0.5
    done
    log "cluster up (node $NODE_NAME: $(node_state))"
    print_env_line
}

cmd_stop() {
    [[ -d $RUN_DIR ]] || { log "nothing to stop"; return 0; }
    stop_all
}

cmd_status() {
    [[ -f $CONF ]] || { log "no cluster configured in $STATE_DIR"; return 1; }
    local rc=0
    munge_ok || { log "munged: not running"; rc=1; }
    ctld_ok || { log "slurmctld: not running / not responding"; rc=1; }
    slurmd_ok || { log "slurmd: not running"; rc=1; }
    if ((rc == 0)); then
        SLURM_CONF=$CONF sinfo -N -l || rc=1
        node_usable || { log "node $NODE_NAME is $(node_state)"; rc=1; }
    fi
    ((rc == 0)) && print_env_line
    return "$rc"
}

main() {
    local cmd=${1:-}
    case "$cmd" in
        start | stop | status) ;;
        # Only a cluster of several nodes has links to take down or shape.
        link | shape) exec bash "$(dirname "${BASH_SOURCE[0]}")/local_nodes.sh" "$@" ;;
        *) echo "usage: $0 start|stop|status [--nodes N] | link NODE | shape RATE|off [NODE...]" >&2; exit 2 ;;
    esac
    if [[ ${2:-} == --nodes ]]; then
        [[ ${3:-} =~ ^[0-9]+$ ]] || { echo "usage: $0 $cmd --nodes N (N: how many nodes)" >&2; exit 2; }
        if ((${3} >= 2)); then
            exec bash "$(dirname "${BASH_SOURCE[0]}")/local_nodes.sh" "$cmd" "$3"
        fi
    elif [[ -n ${2:-} ]]; then
        echo "usage: $0 start|stop|status [--nodes N]" >&2; exit 2
    fi
    if [[ $cmd == stop && ! -d $STATE_DIR ]]; then
        log "nothing to stop"
        return 0
    fi
    [[ $cmd == status ]] || take_lock
    "cmd_$cmd"
}

main "$@"
