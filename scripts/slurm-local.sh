#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the `slurm` tests and for trying
# `hydra/launcher=slurm` on a laptop. Needs root (slurmd starts jobs as their submitter) and Debian's
# packages: apt-get install slurmctld slurmd slurm-client munge
#
#   scripts/slurm-local.sh up [DIR]      config, munge key, state and logs under DIR; starts munged,
#                                        slurmctld and slurmd; prints the line
#                                        `export SLURM_CONF=DIR/slurm.conf C3EXP_SLURM_DIR=DIR`
#   scripts/slurm-local.sh down DIR      stops the three daemons that `up` started there
#
# DIR defaults to $C3EXP_SLURM_DIR; without either, `up` makes a fresh folder (mktemp -d) and prints it,
# since a fixed default name could be planted by someone else beforehand. Nothing outside DIR is written
# (no systemd, no /etc/slurm): several clusters can run side by side, each on its own ports and socket.
#
# Safety, as the daemons run as root: DIR must be a real folder (not a symlink) owned by whoever runs
# this, writable by nobody else, under folders only root or they can change; anything else is refused
# (exit 2) before a file is touched. The munge key is created under umask 077 in a 0700 folder, so it is
# never readable by others. A signal only goes to a process that is the daemon started with this DIR.
set -euo pipefail
umask 077         # nothing here is readable by others unless made so on purpose: the munge key above all
set -o noclobber  # every file this script writes is new: `>` never opens something already there

MARK="written by scripts/slurm-local.sh"

usage() { echo "usage: $0 up [DIR] | $0 down DIR" >&2; exit 2; }
die() { echo "slurm-local: $*" >&2; exit 1; }
refuse() { echo "slurm-local: refused: $*" >&2; exit 2; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------------------------------------------
# The folder

canonical() {  # absolute, without resolving the last name: a symlink there must be seen, not followed
    local path parent
    path=$(realpath -s -m -- "$1")
    [[ $path != / ]] || refuse "/ is not a cluster folder"
    parent=$(realpath -e -- "$(dirname -- "$path")" 2>/dev/null) || refuse "the folder above $path does not exist"
    echo "${parent%/}/$(basename -- "$path")"
}

mode_of() { stat -c '%a' -- "$1"; }
owner_of() { stat -c '%u' -- "$1"; }

ancestors() {  # the folders above $1, up to /
    local path=$1
    while [[ $path != / ]]; do path=$(dirname -- "$path"); echo "$path"; done
}

check_ancestors() {  # munged's rule: only root or we may rename or replace what lies below them
    local folder owner mode
    while IFS= read -r folder; do
        owner=$(owner_of "$folder") mode=$(mode_of "$folder")
        [[ $owner == 0 || $owner == "$(id -u)" ]] || refuse "$folder, above $1, is owned by uid $owner"
        if (( (8#$mode & 8#022) && !(8#$mode & 8#1000) )); then
            refuse "$folder, above $1, is writable by others and not sticky (mode $mode)"
        fi
    done < <(ancestors "$1")
}

check_reachable() {  # munged wants its socket's folder enterable by all, every folder above included
    local folder
    while IFS= read -r folder; do
        if (( (8#$(mode_of "$folder") & 8#111) != 8#111 )); then
            refuse "$folder is not enterable by all users, and munged's socket in $1 must be: use another folder"
        fi
    done < <(ancestors "$1")
}

check_own_folder() {  # a real folder of ours that nobody else can write into
    [[ ! -L $1 ]] || refuse "$1 is a symbolic link"
    [[ -d $1 ]] || refuse "$1 is not a folder"
    local owner mode
    owner=$(owner_of "$1") mode=$(mode_of "$1")
    [[ $owner == "$(id -u)" ]] || refuse "$1 is owned by uid $owner, not by uid $(id -u) who runs this"
    if (( 8#$mode & 8#022 )); then refuse "$1 is writable by group or others (mode $mode)"; fi
}

check_folder() {  # a given folder: its parents, then itself if it exists
    check_ancestors "$1"
    if [[ -e $1 || -L $1 ]]; then check_own_folder "$1"; fi
}

check_ours() {  # up wipes DIR: only an empty folder or one this script wrote (a mistyped DIR keeps its files)
    if [[ -n $(ls -A -- "$1") ]] && ! grep -qsF "$MARK" "$1/slurm.conf"; then
        refuse "$1 is not empty and holds no cluster of this script: give a new or empty folder"
    fi
}

make_folder() {  # DIR itself is never removed: re-creating a path by name lets it be swapped in between
    if [[ -z $1 ]]; then mktemp -d -t c3exp-slurm.XXXXXXXXXX; return; fi
    if [[ ! -e $1 && ! -L $1 ]]; then mkdir -m 700 -- "$1"; fi  # fails if someone made it meanwhile
    check_own_folder "$1"
    echo "$1"
}

wipe() {  # empties DIR (a cluster of this script's): nobody else can add entries to it meanwhile
    find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
}

# ---------------------------------------------------------------------------------------------------
# The daemons

is_daemon() {  # process $1 is the program $2, run by us, with the argument $3 (naming a file in DIR)
    local exe program
    exe=$(readlink -- "/proc/$1/exe" 2>/dev/null) || return 1
    program=$(realpath -e -- "$(command -v "$2")") || return 1  # Debian's slurmd is slurmd-wlm
    [[ ${exe% (deleted)} == "$program" ]] || return 1  # an upgraded package leaves the old binary running
    [[ $(owner_of "/proc/$1" 2>/dev/null) == "$(id -u)" ]] || return 1
    grep -zqxF -- "$3" "/proc/$1/cmdline" 2>/dev/null
}

daemon_pid() {  # the pid in pid file $3 of program $1 started with argument $2, or failure
    local pid
    [[ -f $3 && ! -L $3 && $(owner_of "$3") == "$(id -u)" ]] || return 1
    pid=$(tr -d '[:space:]' <"$3")
    [[ $pid =~ ^[1-9][0-9]{0,9}$ ]] || return 1
    is_daemon "$pid" "$1" "$2" || return 1
    echo "$pid"
}

stop_daemon() {  # SIGTERM, up to 10 s to be gone, then SIGKILL: each only while the pid is still that daemon
    local pid
    if ! pid=$(daemon_pid "$@"); then
        [[ ! -e $3 ]] || echo "slurm-local: $3 names no $1 started with this folder: left alone" >&2
        return 0
    fi
    kill "$pid" 2>/dev/null || return 0
    # kill -0 sends nothing: it waits until the process is reaped too, not just until it exits
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if is_daemon "$pid" "$1" "$2"; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f -- "$3"
}

stop_daemons() {  # slurmd first: it ends the job steps it runs; munged last: the others authenticate through it
    stop_daemon slurmd "$1/slurm.conf" "$1/slurmd.pid"
    stop_daemon slurmctld "$1/slurm.conf" "$1/slurmctld.pid"
    stop_daemon munged "--pid-file=$1/munge/munged.pid" "$1/munge/munged.pid"
}

write_conf() {
    local dir=$1 host=$2 cpus=$3 memory_mb=$4
    cat >"$dir/slurm.conf" <<EOF
# $MARK: one node, this machine, every daemon's file under $dir
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
    chmod 644 "$dir/slurm.conf"  # every user's sbatch and sinfo read it
}

make_layout() {  # the munge key, log, pid and seed in a folder only root enters; the rest readable
    local dir=$1
    mkdir -m 700 -- "$dir/munge" "$dir/state"
    mkdir -m 755 -- "$dir/spool"  # jobs, run as their users, find their batch scripts under it
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"  # new (noclobber), 0600 (umask), in a 0700 folder
    chmod 400 "$dir/munge/munge.key"
    write_conf "$dir" "$(hostname -s)" "$(nproc)" "$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)"
    chmod 755 "$dir"  # users other than root read slurm.conf and reach the munge socket here
}

start_daemons() {  # munged without --force: the layout passes all of its own checks
    local dir=$1
    munged --key-file="$dir/munge/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
        || fail_up "$dir" "munged did not start; see $dir/munge/munged.log"
    # the slurm daemons get the usual umask: their jobs' files belong to the jobs' users
    (umask 022; slurmctld -c -f "$dir/slurm.conf") || fail_up "$dir" "slurmctld did not start; see $dir/slurmctld.log"
    (umask 022; slurmd -f "$dir/slurm.conf") || fail_up "$dir" "slurmd did not start; see $dir/slurmd.log"
}

fail_up() { stop_daemons "$1"; die "$2"; }

wait_for_idle_node() {
    for _ in $(seq 300); do
        if [[ $(SLURM_CONF=$1/slurm.conf sinfo --noheader --format=%T 2>/dev/null) == idle ]]; then return 0; fi
        sleep 0.1
    done
    fail_up "$1" "the node did not become idle within 30 s; see $1/slurmctld.log and $1/slurmd.log"
}

# ---------------------------------------------------------------------------------------------------
# Commands

up() {
    [[ $(id -u) == 0 ]] || die "needs root: slurmd starts each job as the user who submitted it"
    local dir=
    if [[ -n $1 ]]; then
        dir=$(canonical "$1")
        check_folder "$dir"
        check_reachable "$dir"
        if [[ -d $dir ]]; then check_ours "$dir"; fi
    fi
    for program in munged slurmctld slurmd sbatch; do
        command -v "$program" >/dev/null || die "$program not found: apt-get install slurmctld slurmd slurm-client munge"
    done
    dir=$(make_folder "$dir")
    check_ancestors "$dir"
    check_reachable "$dir"
    stop_daemons "$dir"  # a cluster this script started there before
    wipe "$dir"
    make_layout "$dir"
    start_daemons "$dir"
    wait_for_idle_node "$dir"
    echo "slurm-local: a cluster runs in $dir; stop it with: $0 down $dir" >&2
    printf 'export SLURM_CONF=%q C3EXP_SLURM_DIR=%q\n' "$dir/slurm.conf" "$dir"
}

down() {
    [[ -n $1 ]] || usage  # no default: `up` printed the folder
    local dir
    dir=$(canonical "$1")
    [[ -e $dir || -L $dir ]] || refuse "$dir does not exist"
    check_folder "$dir"
    stop_daemons "$dir"
}

[[ $# -ge 1 && $# -le 2 ]] || usage
case $1 in
    up) up "${2:-${C3EXP_SLURM_DIR:-}}" ;;
    down) down "${2:-${C3EXP_SLURM_DIR:-}}" ;;
    *) usage ;;
esac
