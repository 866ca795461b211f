#!/bin/sh
# Several nodes, played by ftpipe processes on loopback with torchrun's
# variables, each in its own workspace: 2 nodes of 2 ranks train to the same
# adapter as 4 ranks on one node; a node with other data is refused, naming it
# and the input that differs; a missing node and a wrong MASTER_PORT fail within
# the rendezvous timeout, naming host and port.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

# node_workspace ROWS PARAMETER-LINE...: a workspace training on ROWS made-up rows (lib.sh).
node_workspace() {
  rows=$1
  shift
  t_train_workspace "$rows" "backend = cpu" "threads = 1" "learning_rate = 1e-2" "logging_steps = 1" "max_steps = 5" \
    "per_device_train_batch_size = 2" "rendezvous_timeout = 3s" "$@"
  echo "$W"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# node RANK WORKSPACE [PORT]: runs ftpipe as node RANK of 2 in the background.
node() {
  NNODES=2 NODE_RANK=$1 MASTER_ADDR=127.0.0.1 MASTER_PORT=${3:-$PORT} "$FTPIPE" -C "$2" > "$2/out" 2>&1 &
}

t_case "2 nodes of 2 ranks train to the adapter of 4 ranks on one node"
PORT=$(free_port)
N0=$(node_workspace 40 "nproc_per_node = 2")
N1=$(node_workspace 40 "nproc_per_node = 2")
ONE=$(node_workspace 40 "nproc_per_node = 4")
node 0 "$N0"; p0=$!
node 1 "$N1"; p1=$!
wait $p0 || t_fail "node 0 failed: $(cat "$N0/out")"
wait $p1 || t_fail "node 1 failed: $(cat "$N1/out")"
"$FTPIPE" -C "$ONE" > "$ONE/out" 2>&1 || t_fail "one node of 4 ranks failed: $(cat "$ONE/out")"
cmp -s "$N0/adapter/adapter_model.safetensors" "$N1/adapter/adapter_model.safetensors" ||
  t_fail "the two nodes' adapters differ"
cmp -s "$N0/adapter/adapter_model.safetensors" "$ONE/adapter/adapter_model.safetensors" ||
  t_fail "2 nodes of 2 ranks differ from 4 ranks on one node (the sums run in the same rank order)"
t_run "$FTPIPE" -C "$N1" log adapter
t_expect_contains "node 1 of 2 (torchrun variables): joining ranks 2-3 of 4 at 127.0.0.1:$PORT"
t_expect_contains "steps of 2 x 1 rows x 4 ranks"
t_expect_contains "network: 127.0.0.1 is reached through lo (127.0.0.1); NCCL_SOCKET_IFNAME is unset"
t_run "$FTPIPE" -C "$N0" log adapter
t_expect_contains "preflight: an all-reduce of the 64.0 KiB of gradients over 4 ranks (host) takes "
t_expect_contains "step time: compute "
t_end

t_case "a node with other data is refused, naming the node and the input"
PORT=$(free_port)
N0=$(node_workspace 40)
N1=$(node_workspace 36)
node 0 "$N0"; p0=$!
node 1 "$N1"; p1=$!
wait $p0 && t_fail "node 0 succeeded with another node's data differing"
wait $p1 && t_fail "node 1 succeeded with its data differing"
grep -q "node 1 ([^)]*) computed something else than node 0: its data or pipeline differs" "$N0/out" ||
  t_fail "node 0 does not say node 1 differs: $(cat "$N0/out")"
grep -q "input data/train_set is [0-9a-f]* there, [0-9a-f]* on node 0" "$N0/out" ||
  t_fail "node 0 does not name the input: $(cat "$N0/out")"
grep -q "rank 0 at 127.0.0.1:$PORT refused the job: node 1 (" "$N1/out" ||
  t_fail "node 1 does not say it was refused: $(cat "$N1/out")"
t_end

t_case "a missing node and a wrong MASTER_PORT fail within the timeout, naming host and port"
PORT=$(free_port)
N0=$(node_workspace 40)
start=$(date +%s)
node 0 "$N0"; p0=$!
wait $p0 && t_fail "node 0 succeeded alone"
[ $(( $(date +%s) - start )) -le 60 ] || t_fail "node 0 took more than 60 s to give up"
grep -q "waited 3 s on port $PORT for 1 of 2 ranks; missing: 1: start the same pipeline on every node" "$N0/out" ||
  t_fail "node 0 does not name the port and the missing rank: $(cat "$N0/out")"
WRONG=$(free_port)
N1=$(node_workspace 40)
node 1 "$N1" "$WRONG"; p1=$!
wait $p1 && t_fail "node 1 succeeded with a wrong port"
grep -q "rank 1 (node 1) could not reach rank 0 at 127.0.0.1:$WRONG within 3 s" "$N1/out" ||
  t_fail "node 1 does not name host and port: $(cat "$N1/out")"
t_end

t_case "examples/multi-node, cpu variant: 2 ranks on one host; 1 rank reuses its result"
W=$(t_workspace)
cp -r "$ROOT/examples/multi-node" "$W/"
mkdir -p "$W/quickstart"
cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/quickstart/"
CPU="BACKEND=cpu GPUS=0 SHAPE=tiny ROWS=256 STEPS=4"
t_run "$FTPIPE" -C "$W/multi-node" $CPU NPROC=2
t_expect_status 0
t_expect_contains "done     adapter"
t_expect_contains "done     report"
t_expect_contains "done     export/peft"
t_run "$FTPIPE" -C "$W/multi-node" log adapter
t_expect_contains "steps of 8 x 8 rows x 2 ranks"
t_run "$FTPIPE" -C "$W/multi-node" $CPU NPROC=1
t_expect_status 0
t_expect_contains "nothing to do"
t_end
