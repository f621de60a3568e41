#!/usr/bin/env bash
# A one-node Slurm cluster on this machine for the cluster tests (tests/cluster): munge,
# slurmctld and slurmd on localhost, accounting off. Idempotent: does nothing when a
# cluster already answers. Needs root and Debian's slurm-wlm + munge packages
# (`apt-get install -y slurm-wlm munge`). Prints the pids it started to .ci/slurm.pids.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if sinfo -h >/dev/null 2>&1 && sinfo -h -o %t | grep -qE 'idle|mix|alloc'; then
  echo "slurm: already up"; exit 0
fi
state=/var/spool/supkd-slurm
mkdir -p "$state/ctld" "$state/d" /var/log/slurm /run/munge /etc/slurm
chown munge:munge /run/munge 2>/dev/null || true
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
host="$(hostname -s)"
cpus="$(nproc)"
mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
# Written whole, then renamed: a Slurm command run meanwhile never reads a half-written file.
cat > /etc/slurm/slurm.conf.tmp <<CONF
# Written by supkd's .ci/slurm-up.sh: a one-node test cluster on loopback.
ClusterName=supkd-ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
StateSaveLocation=${state}/ctld
SlurmdSpoolDir=${state}/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ReturnToService=2
MinJobAge=300
KillWait=5
# JobRequeue=1: batch jobs may be requeued (scontrol requeue, preemption). A requeued job
# is held ~2 minutes before it may start again; the tests release it with
# `scontrol update JobId=N StartTime=now`.
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
mv -f /etc/slurm/slurm.conf.tmp /etc/slurm/slurm.conf
: > "$here/slurm.pids"
/usr/sbin/slurmctld && sleep 0.5
/usr/sbin/slurmd && sleep 0.5
cat /run/slurmctld.pid /run/slurmd.pid >> "$here/slurm.pids" 2>/dev/null || true
for _ in $(seq 1 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qE 'idle|mix|alloc'; then
    echo "slurm: up ($(sinfo -h -o '%P %D %t %c'))"; exit 0
  fi
  sleep 0.5
done
echo "slurm: did not come up; see /var/log/slurm/" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
