#!/usr/bin/env bash
# A real one-node SLURM cluster on 127.0.0.1, for tests and for trying launch/slurm.sbatch
# on a laptop. Needs root (CI runs as root) and Debian's packages, which `install` adds.
#
#   launch/slurm_local_cluster.sh install        apt-get install slurmctld slurmd munge ...
#   launch/slurm_local_cluster.sh start DIR      writes DIR/slurm.conf, starts munged,
#                                                slurmctld and slurmd; PIDs in DIR/*.pid
#   launch/slurm_local_cluster.sh stop DIR       stops them by PID
#
# After `start`, use `SLURM_CONF=DIR/slurm.conf sbatch ...`.
set -euo pipefail
cmd=${1:?usage: $0 install|start DIR|stop DIR}

case "$cmd" in
  install)
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
    fi
    ;;
  start)
    dir=$(realpath -m "${2:?usage: $0 start DIR}")
    mkdir -p "$dir"/{state,spool,log}
    cpus=$(nproc)
    cat > "$dir/slurm.conf" <<CONF
ClusterName=lstmjax
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$((20000 + RANDOM % 10000))
SlurmdPort=$((30000 + RANDOM % 10000))
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    if ! munge -n >/dev/null 2>&1; then  # No working munged yet: start one.
      mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
      [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
      chown -R munge: /run/munge /var/log/munge /var/lib/munge /etc/munge
      chmod 0400 /etc/munge/munge.key
      runuser -u munge -- munged --force
      for _ in $(seq 40); do munge -n >/dev/null 2>&1 && break; sleep 0.25; done
      pgrep -x munged > "$dir/munged.pid"
    fi
    slurmctld -f "$dir/slurm.conf"
    slurmd -f "$dir/slurm.conf" -N localhost
    # The daemons fork; find them by their command lines to stop them by PID later.
    pgrep -f "^slurmctld -f $dir/slurm.conf" > "$dir/slurmctld.pid"
    pgrep -f "^slurmd -f $dir/slurm.conf" > "$dir/slurmd.pid"
    for _ in $(seq 60); do
      if SLURM_CONF="$dir/slurm.conf" sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "SLURM is up: SLURM_CONF=$dir/slurm.conf"; exit 0
      fi
      sleep 0.5
    done
    echo "SLURM did not come up; logs in $dir/log" >&2; exit 1
    ;;
  stop)
    dir=$(realpath -m "${2:?usage: $0 stop DIR}")
    for name in slurmd slurmctld munged; do
      [ -f "$dir/$name.pid" ] && kill $(cat "$dir/$name.pid") 2>/dev/null || true
    done
    ;;
  *) echo "usage: $0 install|start DIR|stop DIR" >&2; exit 2 ;;
esac
