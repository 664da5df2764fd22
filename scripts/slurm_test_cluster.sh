#!/usr/bin/env bash
# A real single-node Slurm (Debian's slurm-wlm 22.05 + munge) on loopback, for testing the
# `slurm/` profile end to end. Run as root, from the repository root.
#
#   bash scripts/slurm_test_cluster.sh start   # install (apt) if needed, configure, start daemons
#   bash scripts/slurm_test_cluster.sh run     # a subset of the default DAG through --profile slurm
#   bash scripts/slurm_test_cluster.sh preempt # scancel -s TERM a toy training, rerun, check it resumed
#   bash scripts/slurm_test_cluster.sh status  # sinfo + squeue
#   bash scripts/slurm_test_cluster.sh stop    # stop the daemons this script started
#
# Facts this relies on (Slurm 22.05.8, plugin 2.8, no systemd; see docs/cluster.md):
# - daemons start in seconds with -D in the background;
# - no slurmdbd (22.05 cannot keep it off 0.0.0.0): the plugin's default sacct polling fails,
#   so the run uses `--slurm-status-command squeue`, and MinJobAge keeps finished jobs in
#   squeue long enough for it; finished jobs are also recorded by jobcomp/filetxt;
# - slurm_account must be explicit (the plugin's guess calls sacct);
# - the first status check waits 40 s unless slurm-init-seconds-before-status-checks is lowered;
# - GPUs are fake gres backed by device files; memory limits are enforced through cgroup v1;
# - CommunicationParameters=NoInAddrAny,NoCtldInAddrAny keeps every daemon on 127.0.0.1.
set -euo pipefail

STATE=${HADES_SLURM_TEST_STATE:-/var/lib/hades-slurm-test}
NODE=hades-node
FAKE_GPUS=2
ETC=/etc/slurm

log() { printf '[slurm-test] %s\n' "$*"; }

install() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    return
  fi
  log "installing slurm-wlm and munge (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
}

configure() {
  local cpus mem_mb
  cpus=$(nproc)
  # leave 2 GB to the host; RealMemory is what jobs may request in total
  mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 2048 ))
  mkdir -p "$STATE"/{ctld,slurmd,log} "$ETC" /run/munge
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    # a character device like /dev/null: Slurm needs a device file per GPU to schedule it
    [[ -e /dev/hades-fake-gpu$i ]] || mknod /dev/hades-fake-gpu$i c 1 3
  done
  cat > "$ETC/slurm.conf" <<EOF
# single-node test cluster written by scripts/slurm_test_cluster.sh
ClusterName=hadestest
SlurmctldHost=localhost(127.0.0.1)
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=3600
KillWait=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
NodeName=$NODE NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$ETC/gres.conf" <<EOF
NodeName=$NODE Name=gpu File=/dev/hades-fake-gpu[0-$((FAKE_GPUS - 1))]
EOF
  cat > "$ETC/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
ConstrainCores=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainDevices=no
EOF
}

start_munge() {
  if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  if ! pgrep -u munge -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
  fi
  munge -n | unmunge >/dev/null
}

start() {
  install
  configure
  start_munge
  if [[ -s $STATE/slurmctld.pid ]] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    log "already running"
  else
    slurmctld -D -i >>"$STATE/log/slurmctld.stdout" 2>&1 &
    echo $! >"$STATE/slurmctld.pid"
    slurmd -D -N "$NODE" >>"$STATE/log/slurmd.stdout" 2>&1 &
    echo $! >"$STATE/slurmd.pid"
  fi
  for _ in $(seq 60); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      log "up: $(sinfo -h -N -o '%N %T cpus=%c mem=%m gres=%G')"
      return
    fi
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  log "slurm did not come up; logs in $STATE/log"
  tail -n 20 "$STATE"/log/*.log >&2 || true
  exit 1
}

stop() {
  for daemon in slurmd slurmctld; do
    local pidfile=$STATE/$daemon.pid
    if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      kill "$(cat "$pidfile")"
      log "stopped $daemon"
    fi
    rm -f "$pidfile"
  done
}

status() {
  sinfo
  squeue -o '%.8i %.24j %.10T %.10M %.6C %.8m %b'
}

run() {
  # A documented subset of the default DAG through the real scheduler: data, the MLflow store,
  # and training + lm-eval + passkey of one model (mamba2), on 2 CPUs with fake GPUs.
  export HADES_SLURM_ACCOUNT=${HADES_SLURM_ACCOUNT:-test}
  export HADES_SLURM_STATUS_COMMAND=${HADES_SLURM_STATUS_COMMAND:-squeue}
  export HADES_SLURM_INIT_SECONDS=${HADES_SLURM_INIT_SECONDS:-5}
  local results=${HADES_SLURM_TEST_RESULTS:-results/slurm-test}
  local cpus
  cpus=$(nproc)
  local start=$SECONDS
  mkdir -p "$results"
  snakemake --profile slurm --jobs 4 --retries 0 --latency-wait 10 \
    --config "results_dir=$results" \
    --set-resources "train:gpu=1" "train:cpus_per_task=1" "train:mem_mb=4000" "train:runtime=30" \
    "lm_eval:gpu=1" "lm_eval:cpus_per_task=1" "lm_eval:mem_mb=4000" "lm_eval:runtime=30" \
    "passkey:gpu=1" "passkey:cpus_per_task=1" "passkey:mem_mb=4000" "passkey:runtime=30" \
    "corpus:cpus_per_task=1" "corpus:mem_mb=2000" "tokenize_shard:cpus_per_task=1" \
    "tokenize_shard:mem_mb=2000" \
    --default-resources "slurm_account=$HADES_SLURM_ACCOUNT" "slurm_partition=test" \
    "cpus_per_task=1" "mem_mb=2000" "runtime=30" \
    -- "$results/eval/mamba2/lm_eval.json" "$results/passkey/mamba2/passkey.csv" \
    2>&1 | tee "$results/slurm-run.log"
  log "subset done in $((SECONDS - start)) s on $cpus CPUs"
  # every job of this run, as Slurm saw it (the plugin names jobs by the run id and puts the
  # rule and wildcards in the comment; MinJobAge keeps finished jobs in squeue)
  local run_id
  run_id=$(sed -n 's/^SLURM run ID: //p' "$results/slurm-run.log" | head -n1)
  squeue -t all --name "$run_id" -o '%.8i %.40k %.10T %.8M'
  local submitted done_ok
  submitted=$(grep -c 'has been submitted with SLURM jobid' "$results/slurm-run.log" || true)
  done_ok=$(squeue -h -t COMPLETED --name "$run_id" | wc -l)
  log "$submitted jobs submitted, $done_ok COMPLETED in squeue"
  if [[ $submitted -eq 0 || $done_ok -ne $submitted ]]; then
    log "not every submitted job completed"
    exit 1
  fi
}

preempt() {
  # A toy training through --profile slurm gets `scancel -s TERM` mid-run: it must write a
  # checkpoint and exit 75, and the same command run again must resume from that step into the
  # same MLflow run and finish (tests/test_slurm_preempt.py; results in results/slurm-preempt).
  export HADES_SLURM_ACCOUNT=${HADES_SLURM_ACCOUNT:-test}
  export HADES_SLURM_STATUS_COMMAND=${HADES_SLURM_STATUS_COMMAND:-squeue}
  export HADES_SLURM_INIT_SECONDS=${HADES_SLURM_INIT_SECONDS:-2}
  local start=$SECONDS
  HADES_REQUIRE_SLURM=1 python -m pytest -q -s -p no:cacheprovider tests/test_slurm_preempt.py \
    -k test_scancel_term_checkpoints_and_rerun_resumes
  log "preemption test done in $((SECONDS - start)) s"
}

case ${1:-} in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  run) run ;;
  preempt) preempt ;;
  *) echo "usage: $0 start|run|preempt|status|stop|install" >&2; exit 2 ;;
esac
