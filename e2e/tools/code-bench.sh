#!/bin/bash
# Code delivery, measured: a 50 MB archive (incompressible) uploaded with cpsctl and activated
# on a generic Service of 10 nodes on the local cloud. Prints the upload time, the time from
# activation until every node runs the version, and the peak RSS (VmHWM) of the controller and
# of the largest agent: streamed transfers keep both far below the archive's size.
# Usage: e2e/tools/code-bench.sh [folder of the built binaries, default the release build]
set -euo pipefail
BIN=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/conpaas/target}/release}
DIR=$(mktemp -d /tmp/conpaas-code-bench.XXXXXX)
export PATH=${CONPAAS_CACHE:-$HOME/.cache/conpaas}/kube-v1.34.4:$BIN:$PATH
CONPAAS_DEV_DIR=$DIR/dev "$BIN/conpaas-devcluster" --apply - > "$DIR/dev.log" 2>&1 &
DEV=$!
trap 'kill -INT $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$DIR"' EXIT
until grep -q "ConPaaS runs" "$DIR/dev.log"; do
  kill -0 $DEV 2>/dev/null || { cat "$DIR/dev.log"; exit 1; }
  sleep 1
done
export KUBECONFIG=$DIR/dev/kubeconfig
kubectl apply -f - > /dev/null <<'YAML'
apiVersion: conpaas.io/v1alpha1
kind: Cloud
metadata: {name: local}
spec: {local: {}}
---
apiVersion: conpaas.io/v1alpha1
kind: Application
metadata: {name: demo, namespace: default}
spec: {cloud: local}
---
apiVersion: conpaas.io/v1alpha1
kind: Service
metadata: {name: gen, namespace: default}
spec: {application: demo, type: generic, roles: [{name: master, count: 1}, {name: node, count: 9}]}
YAML
until kubectl get apiservice v1alpha1.code.conpaas.io \
    -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null | grep -q True; do
  sleep 1
done
cpsctl wait gen --timeout 5m > /dev/null
mkdir -p "$DIR/site"
head -c 50000000 /dev/urandom > "$DIR/site/data.bin"
printf 'echo init\n' > "$DIR/site/init.sh"
printf 'echo v1 > ../../running.txt\nexec sleep 600\n' > "$DIR/site/run.sh"
tar -C "$DIR/site" -cf "$DIR/v1.tar" .
echo "archive: $(stat -c %s "$DIR/v1.tar") bytes, 10 nodes"
t0=$(date +%s.%N)
cpsctl code upload gen "$DIR/v1.tar" --version v1 > /dev/null
t1=$(date +%s.%N)
cpsctl code activate gen v1 > /dev/null
until [ "$(cat "$DIR"/dev/state/vms/*/work/running.txt 2>/dev/null | grep -c v1)" = 10 ]; do
  sleep 0.2
done
t2=$(date +%s.%N)
echo "upload: $(echo "$t1 - $t0" | bc) s"
echo "activation until all 10 nodes run it: $(echo "$t2 - $t1" | bc) s"
controller=$(pgrep -f "^$BIN/conpaas-controller" | head -1)
echo "controller peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$controller/status)"
largest=0
for pid in $(pgrep -f "conpaas-agent.*$DIR"); do
  kib=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  [ "$kib" -gt "$largest" ] && largest=$kib
done
echo "largest agent peak RSS: $(echo "scale=1; $largest / 1024" | bc) MiB"
