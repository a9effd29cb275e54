#!/usr/bin/env bash
# A real one-node Slurm on this machine, for tests: munged + slurmctld + slurmd with a generated
# config under a scratch folder. Daemons are stopped by pid, never by name.
#
#   source tests/slurm/slurm_cluster.sh
#   slurm_start DIR        # writes DIR/slurm.conf, starts the daemons, exports SLURM_CONF
#   sbatch --wait ...      # any Slurm client now talks to it
#   slurm_stop DIR
#
# Needs: slurm-wlm (22.05), munge, run as root (the daemons run as root with SlurmUser=root).

slurm_start() {
  local dir=$1
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc --all)  # not nproc: it honours OMP_NUM_THREADS
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p "$dir"/{state,spool,munge,log}
  chmod 755 "$dir/munge"  # munged wants the socket folder world-executable
  # munge: a private key and socket, so we never touch a system munged.
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  chmod 400 "$dir/munge/munge.key"
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
  cat > "$dir/slurm.conf" <<CONF
ClusterName=dbtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-16817}
SlurmdPort=${SLURMD_PORT:-16818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
ReturnToService=2
JobCompType=jobcomp/none
KillWait=5
InactiveLimit=0
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  local i
  for i in $(seq 1 30); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then return 0; fi
    sleep 1
  done
  echo "slurm_cluster: the node did not come up; logs:" >&2
  tail -n 20 "$dir"/log/*.log >&2
  return 1
}

slurm_stop() {
  local dir=$1 f
  for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 1
  for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  return 0
}
