#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the `slurm` tests and for trying
# `hydra/launcher=slurm` on a laptop. Needs root (slurmd starts jobs as their submitter) and Debian's
# packages: apt-get install slurmctld slurmd slurm-client munge
#
#   scripts/slurm-local.sh up [DIR]      config, munge key, state and logs under DIR; starts munged,
#                                        slurmctld and slurmd; prints the `export SLURM_CONF=...` line
#   scripts/slurm-local.sh down [DIR]    stops the three daemons by their pid files
#
# DIR defaults to $C3EXP_SLURM_DIR or /tmp/c3exp-slurm. Nothing outside DIR is written (no systemd, no
# /etc/slurm): several clusters can run side by side, each on its own free ports and munge socket.
set -euo pipefail

usage() { echo "usage: $0 up|down [DIR]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
command=$1
dir=$(realpath -m "${2:-${C3EXP_SLURM_DIR:-/tmp/c3exp-slurm}}")

die() { echo "slurm-local: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop_pidfile() {  # stop the daemon whose pid is in $1, waiting up to 10 s before SIGKILL
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 0
    pid=$(<"$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

down() {
    # slurmd first: it ends the job steps it runs; munged last: the others authenticate through it
    stop_pidfile "$dir/slurmd.pid"
    stop_pidfile "$dir/slurmctld.pid"
    stop_pidfile "$dir/munged.pid"
}

write_conf() {
    local host=$1 cpus=$2 memory_mb=$3
    cat >"$dir/slurm.conf" <<EOF
# written by scripts/slurm-local.sh: one node, this machine, every daemon's file under $dir
ClusterName=c3exp
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$dir/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# no cgroups, no accounting database: plain process tracking and nothing to set up
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
ReturnToService=2
# short waits, so that requeue, scancel and time limits act within seconds
KillWait=5
MessageTimeout=30
SchedulerParameters=sched_interval=2,bf_interval=2
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_for_idle_node() {
    for _ in $(seq 300); do
        if [[ $(sinfo --noheader --format=%T 2>/dev/null) == idle ]]; then return 0; fi
        sleep 0.1
    done
    die "the node did not become idle within 30 s; see $dir/slurmctld.log and $dir/slurmd.log"
}

up() {
    [[ $(id -u) == 0 ]] || die "needs root: slurmd starts each job as the user who submitted it"
    for program in munged slurmctld slurmd sbatch; do
        command -v "$program" >/dev/null || die "$program not found: apt-get install slurmctld slurmd slurm-client munge"
    done
    # DIR is wiped: only an empty folder or one this script wrote (a mistyped DIR must not lose files)
    if [[ -d $dir && -n $(ls -A "$dir") ]] && ! grep -qs "written by scripts/slurm-local.sh" "$dir/slurm.conf"; then
        die "$dir is not empty and holds no cluster of this script: give a new or empty folder"
    fi
    down
    rm -rf "$dir"
    mkdir -p "$dir/state" "$dir/spool"
    chmod 755 "$dir"  # users other than root read slurm.conf and reach the munge socket here
    head -c 1024 /dev/urandom >"$dir/munge.key"
    chmod 400 "$dir/munge.key"
    munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" \
        || die "munged did not start; see $dir/munged.log"

    local cpus memory_mb
    cpus=$(nproc)
    memory_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
    write_conf "$(hostname -s)" "$cpus" "$memory_mb"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -c || die "slurmctld did not start; see $dir/slurmctld.log"
    slurmd || die "slurmd did not start; see $dir/slurmd.log"
    wait_for_idle_node
    echo "export SLURM_CONF=$SLURM_CONF"
}

case $command in
    up) up ;;
    down) down ;;
    *) usage ;;
esac
