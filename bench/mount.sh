#!/bin/bash
# `platter mount` on the standard workload (make-workload.sh: disk0.img, 4 GiB ext4, plain
# repository, default 1 MiB chunks), next to `platter restore` of the same snapshot:
#   - restore: logical bytes per second (4 GiB / wall), page cache dropped first;
#   - mount: the first `cat disk.img > /dev/null` through a fresh mount, page cache dropped first;
#   - time to first file: from the exec of `platter mount --files latest MNT` (page cache dropped)
#     until a file inside the mounted ext4 (MNT/disk/data/small/d07/s_100) is read whole;
#   - peak RSS of the mount process (VmHWM, after the cat), with the default 64 MiB cache.
# Medians of RUNS. The issue-14 goals are checked at the end. Root is needed (caches, --files).
#
# usage: bench/mount.sh      env RUNS=3  DIR=/tmp/platter-bench  NOBUILD=1  PLATTER=path
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3} DIR=${DIR:-/tmp/platter-bench}
[ "$(id -u)" = 0 ] || { echo "run as root (drop_caches, mount --files)" >&2; exit 1; }
[ "${NOBUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release --quiet)
P=${PLATTER:-$ROOT/target/x86_64-unknown-linux-gnu/release/platter}
[ -f "$DIR/disk0.img" ] || DIR=$DIR "$ROOT/bench/make-workload.sh" base
W=$(mktemp -d "$DIR/mount-bench.XXXXXX")
MOUNT_PID=
cleanup() {
    [ -n "$MOUNT_PID" ] && kill -TERM "$MOUNT_PID" 2>/dev/null && wait "$MOUNT_PID" 2>/dev/null
    umount -R -l "$W/mnt" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
SIZE=$(stat -c %s "$DIR/disk0.img")
FILE=disk/data/small/d07/s_100

"$P" -r "$W/repo" init --plain >/dev/null
"$P" -r "$W/repo" backup "$DIR/disk0.img" >/dev/null

# Starts `platter mount ARGS` in the background (its own session: Ctrl-C of this script does not
# reach it; cleanup stops it).
start_mount() {
    mkdir -p "$W/mnt"; : >"$W/out"
    setsid "$P" -r "$W/repo" mount "$@" >"$W/out" 2>"$W/err" &
    MOUNT_PID=$!
}
stop_mount() {
    kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID" 2>/dev/null || true; MOUNT_PID=
}
alive() { kill -0 "$MOUNT_PID" 2>/dev/null || { echo "platter mount failed:"; cat "$W/err"; exit 1; } >&2; }

restore_s=() cat_s=() ttff_s=() rss_kib=()
for run in $(seq "$RUNS"); do
    rm -f "$W/restored.img"; drop_caches
    t0=$(now); "$P" -r "$W/repo" restore latest "$W/restored.img" >/dev/null; t1=$(now)
    restore_s+=("$(echo "$t1 - $t0" | bc -l)")
    rm -f "$W/restored.img"

    start_mount "$W/mnt"
    until grep -q '^mounted' "$W/out"; do alive; sleep 0.01; done
    drop_caches
    t0=$(now); cat "$W/mnt/latest/disk.img" >/dev/null; t1=$(now)
    cat_s+=("$(echo "$t1 - $t0" | bc -l)")
    rss_kib+=("$(awk '/VmHWM/ {print $2}' "/proc/$MOUNT_PID/status")")
    stop_mount

    drop_caches
    t0=$(now)
    start_mount --files latest "$W/mnt"
    until cat "$W/mnt/$FILE" >/dev/null 2>&1; do alive; sleep 0.01; done
    t1=$(now)
    ttff_s+=("$(echo "$t1 - $t0" | bc -l)")
    stop_mount
    echo "run $run: restore ${restore_s[-1]} s, cat disk.img ${cat_s[-1]} s, first file ${ttff_s[-1]} s, RSS ${rss_kib[-1]} KiB" >&2
done

r=$(printf '%s\n' "${restore_s[@]}" | median)
c=$(printf '%s\n' "${cat_s[@]}" | median)
f=$(printf '%s\n' "${ttff_s[@]}" | median)
m=$(printf '%s\n' "${rss_kib[@]}" | median)
mbps() { echo "$SIZE / $1 / 1000000" | bc -l | xargs printf '%.0f'; }
echo "| what | median s | logical MB/s | peak RSS MiB |"
echo "| --- | --- | --- | --- |"
printf '| restore latest (cache dropped) | %.2f | %s | |\n' "$r" "$(mbps "$r")"
printf '| cat disk.img through the mount (cache dropped) | %.2f | %s | %.0f |\n' "$c" "$(mbps "$c")" "$(echo "$m / 1024" | bc -l)"
printf '| mount --files: exec to first file read | %.2f | | |\n' "$f"
ratio=$(echo "$r / $c" | bc -l)
check() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo "PASS $2"; else echo "MISS $2"; fi; }
check "$ratio >= 0.5" "$(printf 'mount read >= 50%% of restore throughput (%.0f%%)' "$(echo "$ratio * 100" | bc -l)")"
check "$f <= 2" "$(printf 'first file within 2 s of exec (%.2f s)' "$f")"
check "$m <= 150 * 1024" "$(printf 'peak RSS <= 150 MiB (%.0f MiB)' "$(echo "$m / 1024" | bc -l)")"
