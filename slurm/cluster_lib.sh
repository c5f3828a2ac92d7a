# Shared by slurm/local_cluster.sh (one node on loopback) and slurm/local_nodes.sh (several
# nodes in network namespaces): daemons by pid file, the apt install, munge, the common part of
# slurm.conf. Sourced, not run; the caller sets STATE_DIR, LOG_DIR, RUN_DIR, CONF, CTLD_STATE,
# CLUSTER_NAME and the MUNGE_* paths first.

log() { printf 'local_cluster: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PKGS=(slurmctld slurmd slurm-client munge)

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

stop_pid() { # pid comm: TERM, then KILL after 15 s
    local pid=$1 comm=$2 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        [[ -d /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 0
        sleep 0.1
    done
    log "$comm (pid $pid) ignored SIGTERM for 15 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.1
    done
    return 1
}

stop_daemon() { # pidfile comm
    local pidfile=$1 comm=$2 pid
    if ! pid_alive "$pidfile" "$comm"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(<"$pidfile")
    stop_pid "$pid" "$comm" || true
    pid_alive "$pidfile" "$comm" && die "could not stop $comm (pid $pid)"
    rm -f "$pidfile"
    log "stopped $comm (pid $pid)"
}

tail_logs() {
    local f
    for f in "$LOG_DIR"/munged.log "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd*.log "$LOG_DIR"/*.out; do
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

# The part of slurm.conf both kinds of cluster share. $1: SlurmdTimeout.
render_common_conf() {
    cat <<EOF
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
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
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

# A node whose slurmd stops answering is marked down after SlurmdTimeout; one that comes
# back (slurmd restarted) returns to service by itself.
SlurmdTimeout=$1
ReturnToService=2
InactiveLimit=0
# Seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit.
KillWait=5
# Finished jobs stay visible to squeue/scontrol (there is no sacct) for this long.
MinJobAge=300

# Trust the CPU count written here even when it exceeds the hardware (otherwise the node
# is marked inval), so tests can ask for more ranks than cores.
SlurmdParameters=config_overrides
EOF
}

# --- munge --------------------------------------------------------------------------------

prepare_dirs() {
    mkdir -p "$STATE_DIR" "$MUNGE_DIR" "$MUNGE_SOCKET_DIR" "$CTLD_STATE" "$LOG_DIR" "$RUN_DIR" "$@"
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

munge_ok() {
    pid_alive "$RUN_DIR/munged.pid" munged &&
        munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1
}

start_munge() {
    munge_ok && return 0
    stop_daemon "$RUN_DIR/munged.pid" munged
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    spawn_daemon "$LOG_DIR/munged.out" munged \
        --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" \
        --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed"
    local i
    for ((i = 0; i < 100; i++)); do munge_ok && return 0; sleep 0.1; done
    tail_logs
    die "munged did not start"
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

# start/stop from parallel test workers must not interleave; status only reads.
take_lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 300 9 || die "could not lock $STATE_DIR/.lock"
}
