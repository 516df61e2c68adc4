#!/usr/bin/env bash
# A one-node Slurm cluster for tests: munge, slurmctld and slurmd with a minimal
# configuration in a private folder (no accounting database, no cgroups).
#
#   tests/slurm/cluster.sh install      # Debian packages slurm-wlm and munge, when missing
#   tests/slurm/cluster.sh start DIR    # write DIR/slurm.conf, start the daemons, wait for the node
#   tests/slurm/cluster.sh stop DIR     # stop the daemons started by `start DIR`
#
# With ACCOUNTING=1, `install` also installs mariadb-server and slurmdbd, and `start` runs a
# private MariaDB server (TCP port 3307 on 127.0.0.1) and slurmdbd, so that sacct works as
# on a cluster with accounting (not part of `make slurm-test`).
#
# /etc/slurm/slurm.conf becomes a link to DIR/slurm.conf (`stop` removes it): Slurm's
# clients find the cluster there, also the `srun` that the Snakemake jobs call (it does not
# see SLURM_CONF). `start` refuses to run when another slurm.conf is in place. The daemons
# run as the calling user (root on CI); the node has the CPUs and memory that `slurmd -C`
# reports.
set -euo pipefail

die() { echo "slurm cluster: $*" >&2; exit 1; }

ACCOUNTING=${ACCOUNTING:-0}

install_packages() {
    local packages=() tool
    for tool in slurmctld slurmd sbatch munged; do
        command -v $tool >/dev/null || packages=(slurm-wlm munge)
    done
    if [ "$ACCOUNTING" = 1 ]; then
        for tool in slurmdbd mariadbd; do
            command -v $tool >/dev/null || packages+=(slurmdbd mariadb-server)
        done
    fi
    [ ${#packages[@]} = 0 ] && return
    [ "$(id -u)" = 0 ] || die "missing ${packages[*]}: installing them needs root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
}

# A MariaDB server of its own in DIR/db and slurmdbd for it (ACCOUNTING=1).
start_accounting() {
    local dir=$1 user=$2 i
    mariadb-install-db --no-defaults --datadir="$dir/db" --user="$user" >/dev/null
    mariadbd --no-defaults --datadir="$dir/db" --socket="$dir/db.sock" --port=3307 \
        --bind-address=127.0.0.1 --pid-file="$dir/db.pid" --log-error="$dir/db.log" \
        --user="$user" &
    for i in $(seq 60); do
        mariadb --no-defaults --socket="$dir/db.sock" -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 1
    done
    mariadb --no-defaults --socket="$dir/db.sock" -e "
        CREATE USER 'slurm'@'localhost' IDENTIFIED BY 'slurm-test';
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-test';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    cat > "$dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=$user
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurm-test
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$dir/slurmdbd.conf"
    ln -sfn "$dir/slurmdbd.conf" "$ETC_DBD_CONF"
    slurmdbd
    for i in $(seq 60); do
        sacctmgr -n list cluster >/dev/null 2>&1 && break
        sleep 1
    done
    sacctmgr -n list cluster >/dev/null || die "slurmdbd did not come up (logs in $dir)"
    sacctmgr -i add cluster hsicomp-test >/dev/null
    sacctmgr -i add account test Cluster=hsicomp-test >/dev/null
    sacctmgr -i add user "$user" Account=test >/dev/null
}

ETC_CONF=/etc/slurm/slurm.conf
ETC_DBD_CONF=/etc/slurm/slurmdbd.conf

start() {
    local dir=$1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -L "$ETC_CONF" ] && [ ! -e "$ETC_CONF" ]; then
        rm -f "$ETC_CONF"  # left by a cluster whose folder is gone
    fi
    if [ -e "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" != "$dir/slurm.conf" ]; then
        die "$ETC_CONF exists: this machine has a Slurm configuration of its own"
    fi
    chmod 700 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
    chmod 700 "$dir/munge"
    local user host node
    user=$(id -un)
    host=$(hostname -s)
    # munge with its own key and socket, so that a system munge (if any) is left alone
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    # the node as slurmd sees it (CPUs, sockets, cores, threads, memory), less its uptime
    node=$(slurmd -C | head -n 1 | sed -e 's/ UpTime=.*//')
    node=${node/NodeName=* CPUs=/NodeName=$host CPUs=}
    local accounting="AccountingStorageType=accounting_storage/none"
    if [ "$ACCOUNTING" = 1 ]; then
        accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePass=$dir/munge/munge.socket"
    fi
    cat > "$dir/slurm.conf" <<CONF
ClusterName=hsicomp-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
$accounting
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -sfn "$dir/slurm.conf" "$ETC_CONF"
    if [ "$ACCOUNTING" = 1 ]; then
        start_accounting "$dir" "$user"
    fi
    slurmctld
    slurmd
    local i
    for i in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
            echo "slurm cluster: node $host idle ($ETC_CONF -> $dir/slurm.conf)"
            return
        fi
        sleep 1
    done
    sinfo >&2 || true
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    die "the node did not come up in 60 s (logs in $dir)"
}

stop_pid() {
    local file=$1 pid i
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    local dir=$1
    [ -d "$dir" ] || return 0
    if [ -f "$dir/slurm.conf" ]; then
        SLURM_CONF=$dir/slurm.conf scancel --user="$(id -un)" 2>/dev/null || true
    fi
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/slurmdbd.pid"
    stop_pid "$dir/db.pid"
    stop_pid "$dir/munge/munged.pid"
    if [ "$(readlink "$ETC_DBD_CONF" 2>/dev/null)" = "$dir/slurmdbd.conf" ]; then
        rm -f "$ETC_DBD_CONF"
    fi
    if [ "$(readlink "$ETC_CONF" 2>/dev/null)" = "$dir/slurm.conf" ]; then
        rm -f "$ETC_CONF"
    fi
}

case ${1:-} in
    install) install_packages ;;
    start) [ $# = 2 ] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [ $# = 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
