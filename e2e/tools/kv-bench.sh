#!/usr/bin/env bash
# The kvstore service's engine costs, measured with the commands its agents run: five
# redis-server in cluster mode on loopback addresses (as five nodes of the local cloud, with the
# agent's settings), a cluster of 3 masters, then 5 (added and rebalanced as the manager does).
# Prints SET and GET requests/s through the cluster (redis-benchmark --cluster, one client
# machine: compare the two, not the absolute numbers), and the time to drain a master holding a
# third of KEYS keys (rebalance with its weight 0, what a scale-in waits for).
# Needs redis-server and redis-tools. Usage: kv-bench.sh [KEYS] (default 100000).
set -euo pipefail
KEYS=${1:-100000}
ROOT=$(mktemp -d /tmp/conpaas-kv-bench.XXXXXX)
BASE=127.0.251
export REDISCLI_AUTH=bench
cleanup() {
  for n in 1 2 3 4 5; do
    [ -f "$ROOT/n$n/pid" ] && kill "$(cat "$ROOT/n$n/pid")" 2>/dev/null || true
  done
  sleep 1
  rm -rf "$ROOT"
}
trap cleanup EXIT
for n in 1 2 3 4 5; do
  d=$ROOT/n$n
  mkdir -p "$d"
  cat > "$d/redis.conf" <<EOF
bind $BASE.$n
port 6379
protected-mode no
daemonize yes
pidfile $d/pid
logfile $d/log
dir $d
cluster-enabled yes
cluster-config-file $d/nodes.conf
cluster-node-timeout 5000
cluster-announce-ip $BASE.$n
cluster-allow-replica-migration no
appendonly yes
appendfsync everysec
save ""
requirepass "bench"
masterauth "bench"
EOF
  redis-server "$d/redis.conf"
done
sleep 1
at() { echo "$BASE.$1:6379"; }
redis-cli --cluster create "$(at 1)" "$(at 2)" "$(at 3)" --cluster-replicas 0 --cluster-yes >/dev/null
until redis-cli -h $BASE.1 cluster info | grep -q cluster_state:ok; do sleep 0.5; done

throughput() {
  redis-benchmark -h $BASE.1 -a bench --cluster -t set,get -n 200000 -c 50 -P 1 -r 1000000 -q 2>/dev/null \
    | tr '\r' '\n' | grep -E '^(SET|GET): [0-9.]+ requests' | sed 's/^/  /'
}
echo "3 masters:"
throughput

for n in 4 5; do
  redis-cli --cluster add-node "$(at $n)" "$(at 1)" >/dev/null
  until redis-cli -h $BASE.$n cluster info | grep -q cluster_state:ok; do sleep 0.5; done
done
start=$(date +%s.%N)
redis-cli --cluster rebalance "$(at 1)" --cluster-use-empty-masters --cluster-pipeline 100 >/dev/null
echo "2 masters added, slots moved onto them: $(echo "$(date +%s.%N) - $start" | bc) s (nearly empty)"
echo "5 masters:"
throughput

# Back to 3 masters with KEYS keys, then drain one (a third of them).
redis-cli -h $BASE.1 -c flushall >/dev/null
for n in 2 3 4 5; do redis-cli -h $BASE.$n flushall >/dev/null 2>&1 || true; done
for n in 4 5; do
  redis-cli --cluster rebalance "$(at 1)" --cluster-pipeline 100 --cluster-weight "$(redis-cli -h $BASE.$n cluster myid)=0" >/dev/null
  redis-cli --cluster del-node "$(at 1)" "$(redis-cli -h $BASE.$n cluster myid)" >/dev/null
done
seq 1 "$KEYS" | sed 's/.*/SET key:& value-&/' | redis-cli -c -h $BASE.1 >/dev/null
redis-cli --cluster rebalance "$(at 1)" --cluster-pipeline 100 >/dev/null || true
held=$(redis-cli -h $BASE.3 dbsize)
start=$(date +%s.%N)
redis-cli --cluster rebalance "$(at 1)" --cluster-pipeline 100 --cluster-weight "$(redis-cli -h $BASE.3 cluster myid)=0" >/dev/null
echo "drain of a master holding $held of $KEYS keys: $(echo "$(date +%s.%N) - $start" | bc) s"
total=$(( $(redis-cli -h $BASE.1 dbsize) + $(redis-cli -h $BASE.2 dbsize) + $(redis-cli -h $BASE.3 dbsize) ))
echo "keys after the drain: $total (left on the drained master: $(redis-cli -h $BASE.3 dbsize))"
