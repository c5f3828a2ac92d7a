#!/usr/bin/env bash
# A Slurm cluster of N nodes on this machine, for the multi-node tests and CI. Run it through
# local_cluster.sh:
#
#   bash slurm/local_cluster.sh start --nodes N    build it (N >= 2), wait until every node is idle
#   bash slurm/local_cluster.sh stop --nodes N     cancel jobs; stop every process, namespace,
#                                                  link and bridge it made
#   bash slurm/local_cluster.sh status --nodes N   exit 0 only if it is healthy; print its nodes
#   bash slurm/local_cluster.sh link NODE          the host end of NODE's link (ip link set ... down)
#   bash slurm/local_cluster.sh shape RATE|off [NODE...]   rate-limit nodes' links (tbf), default all
#
# Each node is a network namespace (its own address, joined to a bridge on a private /24 by a
# veth pair, `eth0` inside), a UTS namespace (host name nodeK) and a mount namespace in which a
# private hosts file is bind-mounted over /etc/hosts: the node names resolve there, and
# nowhere else (the machine's /etc/hosts is never touched). slurmctld has a namespace of its
# own ("ctl"); one munged serves all, through its socket file. Jobs inherit their slurmd's
# namespaces, so a job's ranks on node2 see node2's network: taking its link down partitions
# them, shaping it slows them.
#
# Namespaces are entered with nsenter, not `ip netns exec`: the latter remounts /sys, which
# hides /sys/fs/cgroup, and slurmd 22.05 then refuses to start.
#
# Clients in the root namespace reach slurmctld by address, but a client that must resolve a
# node name (srun, or a rank started by hand) needs the hosts file too: `start` writes
# wrappers for Slurm's commands into <state dir>/bin that run them under it, and prints
#     export LARSBENCH_SLURM_NODES_DIR=... SLURM_CONF=... PATH=<state dir>/bin:"$PATH"
# (`<state dir>/bin/in-cluster CMD...` runs any command that way).
#
# Only private addresses, only in namespaces this script made: nodes have no route but their
# own /24, so nothing they send can leave the machine. Everything made is listed in
# <state dir>/made and removed by `stop`, processes by pid.
#
# Tunables (environment), distinct from the single-node cluster's so both can run at once:
# LARSBENCH_SLURM_NODES_DIR (default /tmp/larsbench-slurm-nodes), LARSBENCH_SLURM_NODES_NAME
# (cluster name and prefix of namespaces and links, default lbnodes: up to 7 lowercase letters
# and digits), LARSBENCH_SLURM_NODES_SUBNET (first three octets of a private /24, default
# 10.77.0), LARSBENCH_SLURM_NODES_CTLD_PORT / _SLURMD_PORT (default 6827 / 6828),
# LARSBENCH_SLURM_CPUS (CPUs per node, default nproc), LARSBENCH_SLURM_MEM_MB,
# LARSBENCH_SLURM_START_TIMEOUT (seconds, default 60), LARSBENCH_SLURM_NODE_CPU_SHARE (e.g. 0.45:
# each node's slurmd, and so every job step on that node, may use at most that many of the
# machine's CPUs, through a cgroup cpu quota; default: no limit), LARSBENCH_SLURM_NODE_CPU_PERIOD_US
# (the quota's period, default 10000 µs).
#
# The nodes share this machine's cores: without a limit, a rank alone on the machine gets every
# core and a rank among N nodes' ranks a share of them, so one node is faster than one of N. With
# LARSBENCH_SLURM_NODE_CPU_SHARE every node gets the same share whatever the others do, as
# separate machines of equal speed would (keep nodes × share below the machine's cores).
#
# Needs root (namespaces, links, slurmd).
set -euo pipefail

STATE_DIR="${LARSBENCH_SLURM_NODES_DIR:-/tmp/larsbench-slurm-nodes}"
NAME="${LARSBENCH_SLURM_NODES_NAME:-lbnodes}"
SUBNET="${LARSBENCH_SLURM_NODES_SUBNET:-10.77.0}"
CTLD_PORT="${LARSBENCH_SLURM_NODES_CTLD_PORT:-6827}"
SLURMD_PORT="${LARSBENCH_SLURM_NODES_SLURMD_PORT:-6828}"
START_TIMEOUT="${LARSBENCH_SLURM_START_TIMEOUT:-60}"
CPU_SHARE="${LARSBENCH_SLURM_NODE_CPU_SHARE:-}"
CLUSTER_NAME="$NAME"

CONF="$STATE_DIR/slurm.conf"
HOSTS="$STATE_DIR/hosts"
MADE="$STATE_DIR/made"
BIN_DIR="$STATE_DIR/bin"
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_KEY="$MUNGE_DIR/munge.key"
MUNGE_SOCKET_DIR="$STATE_DIR/munge-run"
MUNGE_SOCKET="$MUNGE_SOCKET_DIR/munge.socket"
CTLD_STATE="$STATE_DIR/ctld-state"
SPOOL="$STATE_DIR/spool"
LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"
BRIDGE="$NAME-br"
CLIENTS=(sbatch srun salloc squeue scontrol scancel sinfo sstat)

source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"

# --- names and addresses ------------------------------------------------------------------

check_settings() {
    [[ $NAME =~ ^[a-z][a-z0-9]{0,6}$ ]] ||
        die "LARSBENCH_SLURM_NODES_NAME=$NAME: use 1 to 7 lowercase letters and digits, starting with a letter (it prefixes link names, at most 15 characters)"
    [[ $SUBNET =~ ^(10\.[0-9]{1,3}|172\.(1[6-9]|2[0-9]|3[01])|192\.168)\.[0-9]{1,3}$ ]] ||
        die "LARSBENCH_SLURM_NODES_SUBNET=$SUBNET: give the first three octets of a private /24 (10.x.y, 172.16-31.y or 192.168.y)"
}

nodes_from_conf() { sed -n 's/^# nodes: //p' "$CONF" 2>/dev/null; }

node_name() { echo "node$1"; }
node_addr() { echo "$SUBNET.$((10 + $1))"; }
CTL_ADDR_SUFFIX=10
netns_of() { echo "$NAME-$1"; }  # $1: ctl or nodeK
link_of() { echo "$NAME-$1"; }   # host end of the member's veth pair

# --- configuration ------------------------------------------------------------------------

render_conf() {
    local nodes=$1 cpus mem k
    cpus="${LARSBENCH_SLURM_CPUS:-$(nproc)}"
    mem="${LARSBENCH_SLURM_MEM_MB:-$(detected_mem_mb)}"
    cat <<EOF
# Written by slurm/local_nodes.sh; rewritten (and the cluster rebuilt) when it changes.
# nodes: $nodes
# CPUs each node may use: ${CPU_SHARE:-all} (period ${CPU_PERIOD_US} us)
ClusterName=$CLUSTER_NAME
SlurmctldHost=ctl($SUBNET.$CTL_ADDR_SUFFIX)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# One slurmd per node on one machine: each its own spool folder, pid file and log.
SlurmdSpoolDir=$SPOOL/d-%n
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
EOF
    # Slurm's own default node timeout (300 s): a job whose node is cut off must end by
    # larsbench's means (the batch script's watchdog), not because Slurm gave up on the node.
    render_common_conf 300
    for ((k = 1; k <= nodes; k++)); do
        echo "NodeName=$(node_name "$k") NodeHostname=$(node_name "$k") NodeAddr=$(node_addr "$k") CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=node[1-$nodes] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
}

render_hosts() {
    local nodes=$1 k
    printf '127.0.0.1 localhost\n%s ctl\n' "$SUBNET.$CTL_ADDR_SUFFIX"
    for ((k = 1; k <= nodes; k++)); do
        printf '%s %s\n' "$(node_addr "$k")" "$(node_name "$k")"
    done
}

real_binary() { # the client itself, never a wrapper of ours found earlier on PATH
    local path
    path=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$BIN_DIR" | paste -sd: -)
    PATH=$path command -v "$1"
}

write_wrappers() {
    mkdir -p "$BIN_DIR"
    # Inside a node (a job, a daemon) /etc/hosts already is the cluster's: run as is.
    cat >"$BIN_DIR/in-cluster" <<EOF
#!/bin/sh
# Runs a command where the nodes of the local cluster '$NAME' resolve (written by
# slurm/local_nodes.sh): under its hosts file, in a mount namespace of its own.
export SLURM_CONF='$CONF'
hosts='$HOSTS'
if [ "\$(stat -Lc %d:%i /etc/hosts)" = "\$(stat -Lc %d:%i "\$hosts")" ]; then
    exec "\$@"
fi
exec unshare --mount --propagation private -- sh -c 'mount --bind "\$0" /etc/hosts && exec "\$@"' "\$hosts" "\$@"
EOF
    local client real
    for client in "${CLIENTS[@]}"; do
        real=$(real_binary "$client") || continue
        printf '#!/bin/sh\nexec %q %q "$@"\n' "$BIN_DIR/in-cluster" "$real" >"$BIN_DIR/$client"
    done
    chmod 0755 "$BIN_DIR"/*
}

# --- CPU shares -----------------------------------------------------------------------------

# A short period: a throttled process waits at most this long for its next slice.
CPU_PERIOD_US="${LARSBENCH_SLURM_NODE_CPU_PERIOD_US:-10000}"

check_cpu_share() {
    [[ -z $CPU_SHARE ]] && return 0
    [[ $CPU_SHARE =~ ^[0-9]*\.?[0-9]+$ ]] && awk -v s="$CPU_SHARE" 'BEGIN { exit !(s > 0) }' ||
        die "LARSBENCH_SLURM_NODE_CPU_SHARE=$CPU_SHARE: give the CPUs each node may use, a number above 0 (e.g. 0.45)"
    [[ $CPU_PERIOD_US =~ ^[0-9]+$ ]] && awk -v s="$CPU_SHARE" -v p="$CPU_PERIOD_US" 'BEGIN { exit !(s * p >= 1000 && p <= 1000000) }' ||
        die "LARSBENCH_SLURM_NODE_CPU_PERIOD_US=$CPU_PERIOD_US: the kernel's quota is at least 1000 us, so the period must be at least $(awk -v s="$CPU_SHARE" 'BEGIN { printf "%d", 1000 / s + 1 }') us for a share of $CPU_SHARE (and at most 1000000)"
    [[ -w /sys/fs/cgroup/cpu/cgroup.procs || -f /sys/fs/cgroup/cgroup.controllers ]] ||
        die "LARSBENCH_SLURM_NODE_CPU_SHARE needs the cgroup cpu controller (v1 at /sys/fs/cgroup/cpu, or cgroup v2)"
}

# Puts pid (a node's slurmd; the jobs it starts inherit the group) under the node's CPU quota.
limit_cpu() { # member pid
    [[ -z $CPU_SHARE ]] && return 0
    local member=$1 pid=$2 group quota
    quota=$(awk -v s="$CPU_SHARE" -v p="$CPU_PERIOD_US" 'BEGIN { printf "%d", s * p }')
    if [[ -w /sys/fs/cgroup/cpu/cgroup.procs ]]; then
        group=/sys/fs/cgroup/cpu/$NAME-$member
        mkdir -p "$group"
        made cgroup "$group"
        echo "$CPU_PERIOD_US" >"$group/cpu.cfs_period_us"
        echo "$quota" >"$group/cpu.cfs_quota_us"
    else
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
        group=/sys/fs/cgroup/$NAME-$member
        mkdir -p "$group"
        made cgroup "$group"
        echo "$quota $CPU_PERIOD_US" >"$group/cpu.max"
    fi
    echo "$pid" >"$group/cgroup.procs"
    log "$member: at most $CPU_SHARE CPU ($group)"
}

# --- what was made, and its removal -------------------------------------------------------

made() { echo "$1 $2" >>"$MADE"; }

add_member() { # member address
    local member=$1 address=$2 ns link peer
    ns=$(netns_of "$member")
    link=$(link_of "$member")
    peer="$NAME-p${member#node}"
    ip netns add "$ns"
    made netns "$ns"
    ip link add "$link" type veth peer name "$peer"
    made link "$link"
    ip link set "$peer" netns "$ns"
    ip -n "$ns" link set "$peer" name eth0
    ip -n "$ns" addr add "$address/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip link set "$link" master "$BRIDGE"
    ip link set "$link" up
}

build_network() {
    local nodes=$1 k
    ip link add "$BRIDGE" type bridge
    made bridge "$BRIDGE"
    ip addr add "$SUBNET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    add_member ctl "$SUBNET.$CTL_ADDR_SUFFIX"
    for ((k = 1; k <= nodes; k++)); do
        add_member "$(node_name "$k")" "$(node_addr "$k")"
    done
}

# Names and the subnet must be free, or belong to a cluster this state dir made (removed first).
check_free() {
    local nodes=$1 k name
    for name in "$BRIDGE" "$(link_of ctl)" $(for ((k = 1; k <= nodes; k++)); do link_of "node$k"; done); do
        ! ip link show "$name" >/dev/null 2>&1 ||
            die "a link named $name exists and was not made from $STATE_DIR; remove it or set LARSBENCH_SLURM_NODES_NAME"
    done
    for name in "$(netns_of ctl)" $(for ((k = 1; k <= nodes; k++)); do netns_of "node$k"; done); do
        [[ ! -e /run/netns/$name ]] ||
            die "a network namespace named $name exists and was not made from $STATE_DIR; remove it or set LARSBENCH_SLURM_NODES_NAME"
    done
    if ip -4 -o addr show | awk '{print $4}' | grep -q "^${SUBNET//./\\.}\."; then
        die "addresses in $SUBNET.0/24 are in use on this machine; set LARSBENCH_SLURM_NODES_SUBNET to a free private /24"
    fi
}

# Processes left in a node's namespace (a job's slurmstepd and ranks after its slurmd stopped).
stop_namespace_processes() {
    local kind ns pid
    [[ -s $MADE ]] || return 0
    while read -r kind ns; do
        [[ $kind == netns && -e /run/netns/$ns ]] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            log "stopping pid $pid left in $ns ($(cat "/proc/$pid/comm" 2>/dev/null || echo gone))"
            stop_pid "$pid" process || true
        done
    done <"$MADE"
}

remove_made() {
    local lines=() i kind name
    [[ -s $MADE ]] || { rm -f "$MADE"; return 0; }
    mapfile -t lines <"$MADE"
    for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
        read -r kind name <<<"${lines[i]}"
        case $kind in
            netns) [[ -e /run/netns/$name ]] && ip netns del "$name" ;;
            # A veth end can outlive its namespace's deletion for a moment: delete it by name.
            link | bridge) ip link show "$name" >/dev/null 2>&1 && ip link del "$name" ;;
            # Empty once its processes are gone (stop_namespace_processes ran first).
            cgroup) [[ -d $name ]] && rmdir "$name" ;;
        esac
        log "removed $kind $name"
    done
    rm -f "$MADE"
}

# --- daemons ------------------------------------------------------------------------------

# The daemon runs in the member's network namespace and in new UTS and mount namespaces where
# the host name is the member's and /etc/hosts the cluster's; slurmd passes all three to jobs.
spawn_in() { # member logfile cmd...
    local member=$1 logfile=$2; shift 2
    spawn_daemon "$logfile" nsenter --net="/run/netns/$(netns_of "$member")" \
        unshare --uts --mount --propagation private -- \
        sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"' sh "$member" "$HOSTS" "$@"
}

ctld_ok() {
    pid_alive "$RUN_DIR/slurmctld.pid" slurmctld &&
        SLURM_CONF=$CONF timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'
}

slurmds_ok() {
    local nodes=$1 k
    for ((k = 1; k <= nodes; k++)); do
        pid_alive "$RUN_DIR/slurmd-node$k.pid" slurmd || return 1
    done
}

node_states() { SLURM_CONF=$CONF timeout 10 sinfo -h -N -o '%N %T' 2>/dev/null; }

nodes_usable() {
    local nodes=$1 usable
    usable=$(node_states | awk '$2 ~ /^(idle|mixed|allocated|completing)$/' | wc -l)
    ((usable == nodes))
}

network_ok() {
    local nodes=$1 k
    ip link show "$BRIDGE" >/dev/null 2>&1 || return 1
    for ((k = 1; k <= nodes; k++)); do
        [[ -e /run/netns/$(netns_of "node$k") ]] || return 1
    done
}

healthy() {
    local nodes=$1
    munge_ok && network_ok "$nodes" && ctld_ok && slurmds_ok "$nodes" && nodes_usable "$nodes"
}

print_env_line() {
    printf 'export LARSBENCH_SLURM_NODES_DIR=%q SLURM_CONF=%q PATH=%q:"$PATH"\n' "$STATE_DIR" "$CONF" "$BIN_DIR"
}

stop_all() {
    local nodes k jobs=()
    nodes=$(nodes_from_conf)
    # Jobs left behind by a stopped slurmd keep running as orphaned slurmstepd processes, so
    # cancel them while the controller can still do it.
    if [[ -n $nodes ]] && ctld_ok; then
        mapfile -t jobs < <(SLURM_CONF=$CONF squeue -h -o '%A' 2>/dev/null || true)
        if ((${#jobs[@]} > 0)); then
            log "cancelling jobs: ${jobs[*]}"
            SLURM_CONF=$CONF scancel "${jobs[@]}" 2>/dev/null || true
            for ((k = 0; k < 30; k++)); do
                [[ -z $(SLURM_CONF=$CONF squeue -h -t running,completing -o '%A' 2>/dev/null) ]] && break
                sleep 0.5
            done
        fi
    fi
    local pidfile
    for pidfile in "$RUN_DIR"/slurmd-*.pid; do
        [[ -e $pidfile ]] && stop_daemon "$pidfile" slurmd
    done
    stop_daemon "$RUN_DIR/slurmctld.pid" slurmctld
    stop_daemon "$RUN_DIR/munged.pid" munged
    stop_namespace_processes
    remove_made
}

# --- commands -----------------------------------------------------------------------------

cmd_start() {
    local nodes=$1 new_conf k
    check_settings
    check_cpu_share
    [[ $(id -u) == 0 ]] || die "a cluster of several nodes needs root (network namespaces, links)"
    local tool
    for tool in ip nsenter unshare; do
        command -v "$tool" >/dev/null || die "$tool is missing (iproute2, util-linux)"
    done
    install_packages

    new_conf=$(render_conf "$nodes")
    if [[ -f $CONF && $(<"$CONF") == "$new_conf" ]] && healthy "$nodes"; then
        log "already running ($nodes nodes)"
        print_env_line
        return 0
    fi
    # Anything half-built or of another size goes; a full build takes under a second.
    [[ -f $CONF || -s $MADE ]] && { log "rebuilding"; stop_all; }
    check_free "$nodes"

    prepare_dirs "$SPOOL" "$BIN_DIR"
    for ((k = 1; k <= nodes; k++)); do mkdir -p "$SPOOL/d-node$k"; done
    printf '%s\n' "$new_conf" >"$CONF"
    render_hosts "$nodes" >"$HOSTS"
    write_wrappers
    drop_foreign_state
    build_network "$nodes"

    start_munge
    spawn_in ctl "$LOG_DIR/slurmctld.out" slurmctld -f "$CONF"
    wait_pidfile "$RUN_DIR/slurmctld.pid" slurmctld 15 || { tail_logs; die "slurmctld did not start"; }
    for ((k = 1; k <= nodes; k++)); do
        rm -f "$RUN_DIR/slurmd-node$k.pid"
        spawn_in "node$k" "$LOG_DIR/slurmd-node$k.out" slurmd -f "$CONF" -N "node$k"
    done
    for ((k = 1; k <= nodes; k++)); do
        wait_pidfile "$RUN_DIR/slurmd-node$k.pid" slurmd 15 || { tail_logs; die "slurmd of node$k did not start"; }
        limit_cpu "node$k" "$(<"$RUN_DIR/slurmd-node$k.pid")"
    done

    local deadline=$((SECONDS + START_TIMEOUT))
    until healthy "$nodes"; do
        if ((SECONDS >= deadline)); then
            log "nodes not usable after ${START_TIMEOUT}s"
            node_states >&2 || true
            tail_logs
            exit 1
        fi
        sleep 0.3
    done
    log "cluster $CLUSTER_NAME up: $(node_states | tr '\n' ' ')"
    print_env_line
}

cmd_stop() {
    [[ -d $STATE_DIR ]] || { log "nothing to stop"; return 0; }
    stop_all
}

cmd_status() {
    local nodes=$1 found k rc=0
    [[ -f $CONF ]] || { log "no cluster configured in $STATE_DIR"; return 1; }
    found=$(nodes_from_conf)
    [[ $found == "$nodes" ]] || { log "the cluster in $STATE_DIR has $found nodes, not $nodes"; return 1; }
    munge_ok || { log "munged: not running"; rc=1; }
    network_ok "$nodes" || { log "namespaces or links missing"; rc=1; }
    ctld_ok || { log "slurmctld: not running / not responding"; rc=1; }
    slurmds_ok "$nodes" || { log "a slurmd is not running"; rc=1; }
    if ((rc == 0)); then
        nodes_usable "$nodes" || { log "not every node is usable"; rc=1; }
        # The table on stderr: stdout is the export line alone, for eval.
        {
            printf '%-8s %-14s %-16s %s\n' node address link state
            for ((k = 1; k <= nodes; k++)); do
                printf '%-8s %-14s %-16s %s\n' "node$k" "$(node_addr "$k")" "$(link_of "node$k")" \
                    "$(node_states | awk -v n="node$k" '$1 == n {print $2}')"
            done
        } >&2
    fi
    ((rc == 0)) && print_env_line
    return "$rc"
}

cmd_link() {
    local node=${1:-} nodes
    nodes=$(nodes_from_conf)
    [[ -n $nodes ]] || die "no cluster configured in $STATE_DIR; start one with --nodes N"
    [[ $node =~ ^node([0-9]+)$ ]] && ((BASH_REMATCH[1] >= 1 && BASH_REMATCH[1] <= nodes)) ||
        die "no node '$node' in this cluster: node1 to node$nodes"
    link_of "$node"
}

# tbf needs a bucket that holds at least one timer tick's worth of the rate: 4 ms of it here
# (enough for HZ >= 250), never less than 64 KiB.
burst_for() {
    local rate=$1 value unit bits
    [[ $rate =~ ^([0-9]+)(kbit|mbit|gbit)$ ]] || die "rate '$rate': write it as a number with kbit, mbit or gbit (e.g. 200mbit, 1gbit)"
    value=${BASH_REMATCH[1]}
    unit=${BASH_REMATCH[2]}
    case $unit in kbit) bits=$((value * 1000)) ;; mbit) bits=$((value * 1000000)) ;; gbit) bits=$((value * 1000000000)) ;; esac
    local bytes=$((bits / 8 / 250))
    echo $((bytes > 65536 ? bytes : 65536))
}

cmd_shape() {
    local rate=${1:-} node link nodes k targets=()
    [[ -n $rate ]] || die "usage: shape RATE|off [NODE...] (RATE e.g. 200mbit, 1gbit)"
    shift
    nodes=$(nodes_from_conf)
    if (($# == 0)); then
        for ((k = 1; k <= nodes; k++)); do targets+=("node$k"); done
    else
        targets=("$@")
    fi
    for node in "${targets[@]}"; do
        link=$(cmd_link "$node")
        if [[ $rate == off ]]; then
            tc qdisc del dev "$link" root 2>/dev/null || true
            log "$node ($link): unlimited"
        else
            # On the host end: it shapes what the node receives; shaping every node's link
            # limits each direction of every node pair once.
            tc qdisc replace dev "$link" root tbf rate "$rate" burst "$(burst_for "$rate")" latency 100ms
            log "$node ($link): $rate"
        fi
    done
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        start | stop | status)
            [[ ${1:-} =~ ^[0-9]+$ && $1 -ge 2 ]] || die "usage: $0 $cmd N (N >= 2 nodes)"
            ;;
        link | shape) ;;
        *) echo "usage: $0 start|stop|status N | link NODE | shape RATE|off [NODE...]" >&2; exit 2 ;;
    esac
    if [[ $cmd == stop && ! -d $STATE_DIR ]]; then
        log "nothing to stop"
        return 0
    fi
    [[ $cmd == start || $cmd == stop ]] && take_lock
    "cmd_$cmd" "$@"
}

main "$@"
