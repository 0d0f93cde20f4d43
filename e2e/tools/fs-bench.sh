#!/usr/bin/env bash
# The filesystem service's engine costs, measured with the commands its agents run: two glusterd
# on loopback addresses (as two storage nodes of the local cloud), a distributed volume over
# their two bricks, files written and read through a FUSE mount against the brick's own disk,
# and one node's brick drained off with remove-brick (what a scale-in waits for).
# Prints MB/s through the mount and on the disk, their ratio, and the drain time.
# Needs root, glusterfs-server and glusterfs-client. Usage: fs-bench.sh [GB] (default 1 per node).
set -euo pipefail
GB=${1:-1}
ROOT=$(mktemp -d /tmp/conpaas-fs-bench.XXXXXX)
BASE=127.0.250
cleanup() {
  umount -l "$ROOT/mnt" 2>/dev/null || true
  for n in 1 2; do
    [ -f "$ROOT/n$n/glusterd.pid" ] && kill "$(cat "$ROOT/n$n/glusterd.pid")" 2>/dev/null || true
    for pid in $(find "$ROOT/n$n/run" -name '*.pid' -exec cat {} + 2>/dev/null); do
      kill "$pid" 2>/dev/null || true
    done
  done
  sleep 1
  rm -rf "$ROOT"
}
trap cleanup EXIT
for n in 1 2; do
  d=$ROOT/n$n
  mkdir -p "$d/state" "$d/run" "$d/bricks"
  glusterd --xlator-option "management.working-directory=$d/state" \
    --xlator-option "management.transport.socket.bind-address=$BASE.$n" \
    --xlator-option "management.run-directory=$d/run" \
    --xlator-option "management.glusterd-sockfile=$d/state/glusterd.socket" \
    --log-file="$d/glusterd.log" --pid-file="$d/glusterd.pid"
done
sleep 2
g() { gluster --mode=script --glusterd-sock="$ROOT/n1/state/glusterd.socket" "$@"; }
g peer probe $BASE.2 >/dev/null
sleep 1
g volume create bench $BASE.1:$ROOT/n1/bricks/b $BASE.2:$ROOT/n2/bricks/b force >/dev/null
g volume set bench cluster.min-free-disk 0% >/dev/null
g volume set bench cluster.lookup-optimize off >/dev/null
g volume start bench >/dev/null
mkdir -p "$ROOT/mnt"
mount -t glusterfs $BASE.1:/bench "$ROOT/mnt"

files=$((GB * 2 * 8))   # 128 MB files, about GB on each brick
mbps() { awk -v mb="$1" -v s="$2" 'BEGIN { printf "%.0f", mb / s }'; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
now() { date +%s.%N; }

t0=$(now)
for i in $(seq 1 $files); do
  dd if=/dev/zero of="$ROOT/mnt/f$i" bs=1M count=128 conv=fsync status=none
done
t1=$(now)
sync; echo 3 > /proc/sys/vm/drop_caches
t2=$(now)
cat "$ROOT"/mnt/f* > /dev/null
t3=$(now)
mb=$((files * 128))
mount_write=$(mbps $mb "$(seconds "$t0" "$t1")")
mount_read=$(mbps $mb "$(seconds "$t2" "$t3")")

mkdir -p "$ROOT/disk"
t0=$(now)
for i in $(seq 1 $files); do
  dd if=/dev/zero of="$ROOT/disk/f$i" bs=1M count=128 conv=fsync status=none
done
t1=$(now)
sync; echo 3 > /proc/sys/vm/drop_caches
t2=$(now)
cat "$ROOT"/disk/f* > /dev/null
t3=$(now)
rm -rf "$ROOT/disk"
disk_write=$(mbps $mb "$(seconds "$t0" "$t1")")
disk_read=$(mbps $mb "$(seconds "$t2" "$t3")")

on_two=$(du -sm "$ROOT/n2/bricks/b" | cut -f1)
t0=$(now)
g volume remove-brick bench $BASE.2:$ROOT/n2/bricks/b start >/dev/null
until g volume remove-brick bench $BASE.2:$ROOT/n2/bricks/b status | grep -qE 'completed|failed'; do
  sleep 0.5
done
t1=$(now)
status=$(g volume remove-brick bench $BASE.2:$ROOT/n2/bricks/b status | tail -n +3)
drain=$(seconds "$t0" "$t1")

echo "through the mount: write $mount_write MB/s, read $mount_read MB/s ($mb MB)"
echo "on the brick's disk: write $disk_write MB/s, read $disk_read MB/s"
awk -v a="$mount_write" -v b="$disk_write" -v c="$mount_read" -v d="$disk_read" \
  'BEGIN { printf "mount/disk: write %.2f, read %.2f\n", a / b, c / d }'
echo "drain $on_two MB off the leaving node: ${drain}s"
echo "$status"
