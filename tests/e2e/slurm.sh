# A Slurm cluster of this one host for the tests, started under T_ROOT and
# stopped at exit: munged with its own key and socket, slurmctld and slurmd on
# free ports. Source after lib.sh; slurm_start sets SLURM_CONF (srun and scancel
# read it) or prints why it cannot start and returns 1, or 2 where Slurm cannot
# run on this host at all (the caller reports a skip). Every wait is bounded: a
# Slurm command gets SLURM_COMMAND_SECONDS, a wait for a state SLURM_WAIT_SECONDS.
SLURM_COMMAND_SECONDS=10
SLURM_WAIT_SECONDS=30
slurm_free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# A Slurm client command, given up after SLURM_COMMAND_SECONDS (a client retries an
# unreachable slurmctld for minutes).
slurm_command() { timeout "$SLURM_COMMAND_SECONDS" "$@"; }
# slurm_until SECONDS COMMAND...: runs COMMAND (a function may be) every 0.1 s until it
# succeeds; returns 1 when SECONDS pass first.
slurm_until() {
  deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}
slurm_node_idle() { slurm_command sinfo -h -o %t 2>/dev/null | grep -q idle; }
# slurmctld and slurmd listen on getaddrinfo(NULL) for IPv4 with AI_ADDRCONFIG, which
# finds nothing where loopback is the only address (a bare network namespace).
slurm_host_has_address() {
  python3 -c 'import socket; socket.getaddrinfo(None, 6817, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE | socket.AI_ADDRCONFIG)' \
    2>/dev/null
}
slurm_start() {
  for tool in munged slurmctld slurmd srun scancel sinfo squeue; do
    command -v $tool >/dev/null 2>&1 || { echo "slurm: $tool is missing (Debian: munge slurmctld slurmd slurm-client)"; return 1; }
  done
  if ! slurm_host_has_address; then
    echo "this host has no network address but loopback, where slurmctld cannot listen (getaddrinfo with AI_ADDRCONFIG finds nothing)"
    return 2
  fi
  SLURM_DIR=$(mktemp -d "$T_ROOT/slurm.XXXXXX")
  chmod 700 "$SLURM_DIR"
  mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool"
  dd if=/dev/urandom of="$SLURM_DIR/munge.key" bs=1024 count=1 2>/dev/null
  chmod 600 "$SLURM_DIR/munge.key"
  timeout "$SLURM_COMMAND_SECONDS" munged --force --socket="$SLURM_DIR/munge.sock" --key-file="$SLURM_DIR/munge.key" \
    --pid-file="$SLURM_DIR/munged.pid" --log-file="$SLURM_DIR/munged.log" --seed-file="$SLURM_DIR/munge.seed" ||
    { echo "slurm: munged did not start: $(cat "$SLURM_DIR/munged.log" 2>/dev/null)"; return 1; }
  SLURM_HOST=$(hostname -s)
  cat > "$SLURM_DIR/slurm.conf" <<CONF
ClusterName=ftpipe
SlurmctldHost=$SLURM_HOST(127.0.0.1)
SlurmctldPort=$(slurm_free_port)
SlurmdPort=$(slurm_free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SLURM_DIR/munge.sock
CredType=cred/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
NodeName=$SLURM_HOST NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$SLURM_HOST Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$SLURM_DIR/slurm.conf"
  trap 'slurm_stop; chmod -R u+w "$T_ROOT" 2>/dev/null; rm -rf "$T_ROOT"' EXIT
  timeout "$SLURM_COMMAND_SECONDS" slurmctld -f "$SLURM_CONF" -i ||
    { echo "slurm: slurmctld did not start: $(tail -5 "$SLURM_DIR/slurmctld.log")"; return 1; }
  timeout "$SLURM_COMMAND_SECONDS" slurmd -f "$SLURM_CONF" -N "$SLURM_HOST" ||
    { echo "slurm: slurmd did not start: $(tail -5 "$SLURM_DIR/slurmd.log")"; return 1; }
  slurm_until "$SLURM_WAIT_SECONDS" slurm_node_idle || {
    echo "slurm: the node was not idle within $SLURM_WAIT_SECONDS s: $(slurm_command sinfo 2>&1)"
    echo "slurmctld's log: $(tail -3 "$SLURM_DIR/slurmctld.log")"
    echo "slurmd's log: $(tail -3 "$SLURM_DIR/slurmd.log")"
    return 1
  }
}
slurm_daemon_gone() { ! kill -0 "$1" 2>/dev/null; }
slurm_stop() {
  for daemon in slurmd slurmctld munged; do
    [ -f "$SLURM_DIR/$daemon.pid" ] || continue
    pid=$(cat "$SLURM_DIR/$daemon.pid")
    kill "$pid" 2>/dev/null
    slurm_until 5 slurm_daemon_gone "$pid" || kill -9 "$pid" 2>/dev/null
  done
}
