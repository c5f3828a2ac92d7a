#!/usr/bin/env bash
# Single-node Slurm cluster on loopback for larsbench's test suite and CI.
#
#   bash slurm/local_cluster.sh start    install (apt) if needed, start, wait for an idle node
#   bash slurm/local_cluster.sh stop     cancel jobs, stop the daemons this script started
#   bash slurm/local_cluster.sh status   print sinfo; exit 0 only if the cluster is healthy
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

PKGS=(slurmctld slurmd slurm-client munge)

log() { printf 'local_cluster: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- process bookkeeping ------------------------------------------------------------------

# A pid file can outlive its daemon (kill -9, reboot of a container) and the pid can be
# reused by something else, so "running" means: pid file names a live process whose
# command name is the daemon we expect.
pid_alive() { # pidfile comm
    local pidfile=$1 comm=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(<"/proc/$pid/comm") == "$comm" ]] || return 1
    # A zombie still has /proc/<pid>/comm.
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

# Daemons must not inherit our file descriptors: the flock fd would keep the lock held for
# the daemons' lifetime, and an inherited stdout/stderr pipe (pytest's
# subprocess.run(capture_output=True), CI log capture) would never see EOF, so the caller
# would hang until the daemons exit. Close every fd above 2, point 0-2 at /dev/null and the
# daemon's own log, and start it in a new session so it leaves our process group (a ^C or a
# CI step's kill of the group must not take the cluster down half-way).
spawn_daemon() { # logfile cmd...
    local logfile=$1; shift
    (
        for fd in "/proc/$BASHPID/fd"/*; do
            fd=${fd##*/}
            if (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid "$@" </dev/null >>"$logfile" 2>&1
    )
}

wait_pidfile() { # pidfile comm seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        pid_alive "$1" "$2" && return 0
        sleep 0.1
    done
    return 1
}

stop_daemon() { # pidfile comm
    local pidfile=$1 comm=$2 pid i
    if ! pid_alive "$pidfile" "$comm"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        pid_alive "$pidfile" "$comm" || break
        sleep 0.1
    done
    if pid_alive "$pidfile" "$comm"; then
        log "$comm (pid $pid) ignored SIGTERM for 15 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pidfile" "$comm" || break
            sleep 0.1
        done
    fi
    pid_alive "$pidfile" "$comm" && die "could not stop $comm (pid $pid)"
    rm -f "$pidfile"
    log "stopped $comm (pid $pid)"
}

tail_logs() {
    local f
    for f in "$LOG_DIR"/munged.log "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log \
             "$LOG_DIR"/*.out; do
        [[ -s $f ]] || continue
        printf '==> %s <==\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

# --- installation -------------------------------------------------------------------------

have_binaries() {
    local b
    for b in slurmctld slurmd sinfo scontrol sbatch srun munged munge unmunge; do
        command -v "$b" >/dev/null || return 1
    done
}

install_packages() {
    have_binaries && return 0
    [[ $(id -u) == 0 ]] || die "Slurm is not installed and installing it needs root"
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is unavailable"
    log "installing ${PKGS[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Images that were cleaned after build have no package lists: update only then, since
    # an update costs more than the install itself.
    if ! apt-get install -y -q --no-install-recommends "${PKGS[@]}" >&2; then
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends "${PKGS[@]}" >&2
    fi
    have_binaries || die "apt-get finished but Slurm or munge programs are missing"
}

# --- configuration ------------------------------------------------------------------------

detected_mem_mb() {
    # slurmd -C prints the node line slurmd will register with; declaring more RealMemory
    # than that drains the node, declaring none (1 MB) makes every --mem request fail.
    local mem
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]\+\).*/\1/p' | head -n1)
    [[ -n $mem ]] || mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    echo "$mem"
}

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
SlurmUser=root
SlurmdUser=root

# Own munged, own key and socket: no dependence on (or interference with) a system munge.
# cred_expire also holds a requeued job back from starting again (default 120 s); on
# loopback a job credential is used within milliseconds of being made, so 10 s is plenty
# and keeps requeue/preemption tests fast.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10

StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No systemd, no cgroups (containers, CI runners). proctrack/pgid rather than linuxproc:
# linuxproc follows parentage, so a background process whose batch script has exited
# (re-parented to init) escapes it and outlives the job; pgid kills the whole process group.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
# No mail on this machine; the default /bin/mail is absent and logs an error.
MailProg=/bin/true

# Per-CPU allocation so several small jobs (array elements, concurrent tests) share the
# node; memory is checked against RealMemory but not consumed, so jobs without --mem do
# not each reserve the whole node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Start jobs as soon as they are submitted instead of after up to 3 s, and look at pending
# jobs every second rather than every 60 s (main loop) / 30 s (backfill): a job that becomes
# eligible without any event (requeued job, --begin) would otherwise wait that long.
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=2
# Tests use scontrol requeue and preemption-by-signal, so jobs are requeueable by default.
JobRequeue=1

# A dead slurmd is noticed after ~SlurmdTimeout instead of the default 300 s, and a node
# that comes back (slurmd restarted) returns to service by itself.
SlurmdTimeout=30
ReturnToService=2
InactiveLimit=0
# Seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit.
KillWait=5
# Finished jobs stay visible to squeue/scontrol (there is no sacct) for this long.
MinJobAge=300

# Trust the CPU count written here even when it exceeds the hardware (otherwise the node
# is marked inval), so tests can ask for more ranks than cores.
SlurmdParameters=config_overrides
NodeName=$NODE_NAME NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

prepare_dirs() {
    mkdir -p "$STATE_DIR" "$MUNGE_DIR" "$MUNGE_SOCKET_DIR" "$CTLD_STATE" "$SLURMD_SPOOL" \
        "$LOG_DIR" "$RUN_DIR"
    # munged refuses a key readable by others and a socket dir it cannot vouch for; it also
    # rejects a socket dir of mode 0700 (clients must reach the socket), so 0755.
    chmod 0755 "$STATE_DIR" "$MUNGE_SOCKET_DIR"
    chmod 0700 "$MUNGE_DIR"
    if [[ ! -s $MUNGE_KEY ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        fi
    fi
    chmod 0600 "$MUNGE_KEY"
}

# slurmctld exits with "CLUSTER NAME MISMATCH" when its saved state belongs to another
# ClusterName; that state is useless to us, so drop it.
drop_foreign_state() {
    local f="$CTLD_STATE/clustername"
    if [[ -s $f && $(<"$f") != "$CLUSTER_NAME" ]]; then
        log "dropping saved state of cluster '$(<"$f")' in $CTLD_STATE"
        rm -rf "${CTLD_STATE:?}"/*
    fi
}

# --- health -------------------------------------------------------------------------------

munge_ok() {
    pid_alive "$RUN_DIR/munged.pid" munged &&
        munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1
}

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

    prepare_dirs
    if [[ ! -f $CONF || $(<"$CONF") != "$new_conf" ]]; then
        # Daemons read slurm.conf only at start; restart them all on a changed config so
        # clients and daemons agree.
        [[ -f $CONF ]] && { log "configuration changed, restarting"; stop_all; }
        printf '%s\n' "$new_conf" >"$CONF"
    fi
    drop_foreign_state

    if ! munge_ok; then
        stop_daemon "$RUN_DIR/munged.pid" munged
        rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
        spawn_daemon "$LOG_DIR/munged.out" munged \
            --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" \
            --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
            --seed-file="$MUNGE_DIR/munged.seed"
        local i
        for ((i = 0; i < 100; i++)); do munge_ok && break; sleep 0.1; done
        munge_ok || { tail_logs; die "munged did not start"; }
    fi

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
        *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
    esac
    if [[ $cmd == stop && ! -d $STATE_DIR ]]; then
        log "nothing to stop"
        return 0
    fi
    # start/stop from parallel test workers must not interleave; status only reads.
    if [[ $cmd != status ]]; then
        mkdir -p "$STATE_DIR"
        exec 9>"$STATE_DIR/.lock"
        flock -w 300 9 || die "could not lock $STATE_DIR/.lock"
    fi
    "cmd_$cmd"
}

main "$@"
