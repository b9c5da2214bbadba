#!/bin/bash
# The incremental of the standard workload with and without each change source, next to qemu-img's.
#
# usage: bench/change-sources.sh [-h]     (bench/run.sh calls it when TOOLS holds "changes")
#   env RUNS=5              runs (medians are reported)
#       DIR=/tmp/platter-bench   holds disk0.img (original) and disk.img (changed) of make-workload.sh;
#                                built there when missing
#       PLATTER=path         platter binary (default: <repo>/target/x86_64-unknown-linux-gnu/release/platter;
#                            build it first: cargo build --release)
#       SCRATCH=/dev/shm     where the XFS filesystem (a sparse file, loop-mounted) and the repositories
#                            live: on a tmpfs the numbers show the software, not a disk
#
# One run: the work image W (on XFS, which has reflinks) is a copy of disk0.img; three repositories get a
# full backup of it (the reflink one with --change-source reflink, which keeps a shadow); then exactly the
# 4 KiB blocks in which disk.img differs from disk0.img are written into W in place (as a VM would write
# them), and each repository gets the incremental:
#   scan      plain `backup W`: reads every used chunk and compares fingerprints
#   ranges    `backup W --changed-ranges FILE`, FILE = those 4 KiB blocks (what thin_delta or
#             era_invalidate would say, at 4 KiB)
#   reflink   `backup W` (uses the shadow): FIEMAP of the old and new shadow, reads the changed pages
#   qemu-img  `qemu-img create -b disk.img` + `rebase -b full.qcow2`, as bench/run.sh times it
# And for a qcow2 image Q (`qemu-img convert -O qcow2 disk0.img`, in SCRATCH), whose guest gets the same
# 4 KiB blocks written through a qemu-storage-daemon FUSE export (as a VM would write them, so QEMU marks
# its dirty bitmaps), two more repositories, both reading the guest's disk through qemu-nbd:
#   qcow2 scan     plain `backup Q`: the guest's used chunks read over NBD and compared
#   qemu-bitmap    `backup Q` after a full backup with --change-source qemu-bitmap: reads what the
#                  parent's persistent dirty bitmap marks (64 KiB clusters)
# Per row: wall and CPU s (/usr/bin/time), bytes read from the source (platter's bytes_read), bytes of the
# parent's chunks read back from the repository under the changed pages (bytes_base), bytes read
# by all read calls of the command (rchar of /proc/PID/io, children included: repository reads too),
# bytes added (du -sb delta), and the incremental's time over the full backup's. Restores of run 1 are
# compared with disk.img (cmp).
# shellcheck disable=SC2016   # the timed commands are single-quoted on purpose (expanded by bash -c)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUNS=${RUNS:-5}
DIR=${DIR:-/tmp/platter-bench}
SCRATCH=${SCRATCH:-/dev/shm}
PLATTER=${PLATTER:-$ROOT/target/x86_64-unknown-linux-gnu/release/platter}
case ${1:-} in
    -h|--help) awk 'NR > 1 && /^# shellcheck/ {exit} NR > 1 && /^#/ {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "run as root (loop devices, mounts)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }
[ -x "$PLATTER" ] || { echo "no platter binary at $PLATTER (cargo build --release)" >&2; exit 1; }
for p in mkfs.xfs qemu-img qemu-nbd qemu-storage-daemon python3 /usr/bin/time; do
    command -v "$p" > /dev/null || { echo "missing $p (apt-get install xfsprogs qemu-utils qemu-system-common python3 time)" >&2; exit 1; }
done
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
SRC=$DIR/disk0.img CHG=$DIR/disk.img
if [ ! -f "$SRC" ] || [ ! -f "$CHG" ]; then
    log "workload: building (about 1 minute)"
    DIR=$DIR "$HERE/make-workload.sh" all > "$DIR/.workload.log" 2>&1 || { cat "$DIR/.workload.log" >&2; exit 1; }
fi

# ---------------------------------------------------------------- the change, as 4 KiB blocks
RANGES=$DIR/.changed-4k.ranges
KEY=$(stat -c '%s %Y' "$SRC" "$CHG" | tr '\n' ' ')
if [ ! -f "$RANGES" ] || [ "$(head -n 1 "$RANGES")" != "# $KEY" ]; then
    log "finding the 4 KiB blocks in which disk.img differs from disk0.img"
    python3 - "$SRC" "$CHG" "$KEY" > "$RANGES.tmp" <<'EOF'
import mmap, sys
a, b, key = sys.argv[1], sys.argv[2], sys.argv[3]
print("# " + key)
with open(a, "rb") as fa, open(b, "rb") as fb:
    ma = mmap.mmap(fa.fileno(), 0, prot=mmap.PROT_READ)
    mb = mmap.mmap(fb.fileno(), 0, prot=mmap.PROT_READ)
    assert len(ma) == len(mb), "the images differ in size"
    M, B = 1 << 20, 4096
    for big in range(0, len(ma), M):
        if ma[big:big + M] == mb[big:big + M]:
            continue
        for off in range(big, min(big + M, len(ma)), B):
            if ma[off:off + B] != mb[off:off + B]:
                print(off, min(B, len(ma) - off))
EOF
    mv "$RANGES.tmp" "$RANGES"
fi
CHANGED=$(awk '!/^#/ {s += $2} END {print s + 0}' "$RANGES")
log "the change: $(( CHANGED / 1048576 )) MiB in $(grep -vc '^#' "$RANGES") blocks of 4 KiB"

# ---------------------------------------------------------------- scratch: XFS on a loop device
WORK=$(mktemp -d "$SCRATCH/platter-changes.XXXXXX")
MNT=$WORK/xfs
LOOP=
cleanup() {
    if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
    if [ -n "$LOOP" ]; then losetup -d "$LOOP" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
truncate -s 12G "$WORK/xfs.fs"
LOOP=$(losetup -f --show "$WORK/xfs.fs")
mkfs.xfs -q "$LOOP"
mkdir -p "$MNT"
mount "$LOOP" "$MNT"
W=$MNT/w.img
RES=$WORK/results.tsv
: > "$RES"
export PLATTER W SRC CHG RANGES

# timed NAME CMD: runs CMD under /usr/bin/time; sets T_WALL T_CPU, T_RCHAR (all read calls of CMD and
# its children), and leaves CMD's stdout in $WORK/NAME.out
timed() {
    local tf=$WORK/time.out line
    /usr/bin/time -f '%e %U %S' -o "$tf" bash -c "$2"'; s=$?; grep ^rchar /proc/$$/io > '"$WORK/rchar"'; exit $s' \
        > "$WORK/$1.out" 2> "$WORK/$1.err" || { log "$1 FAILED: $(tail -n 3 "$WORK/$1.err")"; return 1; }
    line=$(tail -n 1 "$tf")
    read -r T_WALL u s <<< "$line"
    T_CPU=$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.2f", u + s}')
    T_RCHAR=$(awk '{print $2}' "$WORK/rchar")
}
jfield() { sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1" | head -n 1; }
dusb() { du -sb "$1" | cut -f1; }

# incremental MODE IMG [EXTRA]: times the incremental of repository MODE, notes its row; in run 1 checks
# that its restore equals W
incremental() {
    export R=$WORK/repo-$1 IMG=$2
    local before
    before=$(dusb "$R")
    cat "$IMG" > /dev/null
    timed "$1.incr" '"$PLATTER" -r "$R" --json backup "$IMG" '"${3:-}" || exit 1
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$run" "$T_WALL" "$T_CPU" \
        "$(jfield "$WORK/$1.incr.out" bytes_read)" "$T_RCHAR" $(( $(dusb "$R") - before )) "${FULL[$1]}" \
        "$(jfield "$WORK/$1.incr.out" bytes_base)" >> "$RES"
    log "  $1: ${T_WALL}s, read $(( $(jfield "$WORK/$1.incr.out" bytes_read) / 1048576 )) MiB from the source"
    if [ "$run" = 1 ]; then
        "$PLATTER" -r "$R" restore latest "$WORK/restored.img" > /dev/null
        cmp -s "$WORK/restored.img" "$W" || { log "  $1: the restore DIFFERS from the image"; echo "$1 restore MISMATCH" >> "$WORK/mismatch"; }
        cmp -s "$W" "$CHG" || log "  note: W differs from disk.img"
        rm -f "$WORK/restored.img"
    fi
}

# write_change TARGET: what the VM writes, the changed 4 KiB blocks, in place
write_change() {
    python3 - "$CHG" "$1" "$RANGES" <<'EOF'
import os, sys
src, dst, ranges = sys.argv[1:4]
s, d = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY)
for line in open(ranges):
    if line.startswith("#"):
        continue
    off, n = map(int, line.split())
    os.pwrite(d, os.pread(s, n, off), off)
os.fsync(d)
EOF
}

for run in $(seq 1 "$RUNS"); do
    log "run $run/$RUNS"
    rm -rf "$WORK"/repo-* "$WORK"/qemu "$MNT"/.w.img.platter-shadow.* "$WORK/vm.qcow2"
    cp --sparse=always "$SRC" "$W"
    sync
    declare -A FULL=()
    for mode in scan ranges reflink; do
        export R=$WORK/repo-$mode
        "$PLATTER" -r "$R" init --plain > /dev/null
        extra=; [ "$mode" = reflink ] && extra="--change-source reflink"
        cat "$W" > /dev/null
        timed "$mode.full" '"$PLATTER" -r "$R" --json backup "$W" '"$extra" || exit 1
        FULL[$mode]=$T_WALL
    done
    write_change "$W"
    sync
    incremental scan "$W"
    incremental ranges "$W" '--changed-ranges "$RANGES"'
    incremental reflink "$W"
    # The qcow2 image, after the raw repositories are gone (they would not all fit in a tmpfs).
    rm -rf "$WORK"/repo-* "$MNT"/.w.img.platter-shadow.*
    Q=$WORK/vm.qcow2
    qemu-img convert -O qcow2 "$SRC" "$Q"
    for mode in qscan qbitmap; do
        export R=$WORK/repo-$mode IMG=$Q
        "$PLATTER" -r "$R" init --plain > /dev/null
        extra=; [ "$mode" = qbitmap ] && extra="--change-source qemu-bitmap"
        cat "$Q" > /dev/null
        timed "$mode.full" '"$PLATTER" -r "$R" --json backup "$IMG" '"$extra" || exit 1
        FULL[$mode]=$T_WALL
    done
    # Into the qcow2's guest through a FUSE export of qemu-storage-daemon (QEMU marks the dirty
    # bitmaps), stopped cleanly after.
    : > "$WORK/qfuse.img"
    qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$Q" --blockdev driver=qcow2,node-name=q,file=f \
        --export type=fuse,id=e,node-name=q,mountpoint="$WORK/qfuse.img",writable=on 2> "$WORK/qsd.err" &
    QSD=$!
    for _ in $(seq 100); do [ "$(stat -c %s "$WORK/qfuse.img")" -gt 0 ] && break; sleep 0.1; done
    write_change "$WORK/qfuse.img"
    kill "$QSD"; wait "$QSD" || true
    sync
    incremental qscan "$Q"
    incremental qbitmap "$Q"
    rm -rf "$WORK"/repo-* "$Q"
    mkdir -p "$WORK/qemu"
    cat "$SRC" > /dev/null
    timed qemu.full 'qemu-img convert -O qcow2 "$SRC" "'"$WORK"'/qemu/full.qcow2"' || exit 1
    qfull=$T_WALL
    cat "$CHG" "$WORK/qemu/full.qcow2" > /dev/null
    timed qemu.incr 'qemu-img create -q -f qcow2 -b "$CHG" -F raw "'"$WORK"'/qemu/incr.qcow2" && qemu-img rebase -b "'"$WORK"'/qemu/full.qcow2" -F qcow2 "'"$WORK"'/qemu/incr.qcow2"' || exit 1
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' qemu "$run" "$T_WALL" "$T_CPU" - "$T_RCHAR" "$(dusb "$WORK/qemu/incr.qcow2")" "$qfull" - >> "$RES"
    log "  qemu-img: ${T_WALL}s"
done

echo
echo "## Incrementals with and without change sources — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPU, RUNS=$RUNS (medians)"
echo
echo "Workload: make-workload.sh; the change is the $(( CHANGED / 1048576 )) MiB of 4 KiB blocks in which disk.img differs from disk0.img, written in place into a copy of disk0.img on XFS (loop device over a sparse file in $SCRATCH; repositories in $SCRATCH: the numbers show the software). Images are read into the page cache before every timed backup."
echo
echo "| incremental | wall s | CPU s | read from the source | parent chunks read back | all reads (rchar) | added | full backup wall s | incr / full |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
awk -F '\t' '
function median(s,    a, n, i, j, t) {
    n = split(s, a, " "); if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function mib(b) { return (b == "" || b == "-") ? "-" : sprintf("%.1f MiB", b / 1048576) }
{ k = $1; if (!(k in order)) { order[k] = ++n; name[n] = k }
  w[k] = w[k] " " $3; c[k] = c[k] " " $4; if ($5 != "-") r[k] = r[k] " " $5; rc[k] = rc[k] " " $6; a[k] = a[k] " " $7; f[k] = f[k] " " $8
  if ($9 != "-" && $9 != "") bb[k] = bb[k] " " $9 }
END {
    label["scan"] = "platter, scan (no change source)"; label["ranges"] = "platter --changed-ranges (4 KiB blocks)"
    label["reflink"] = "platter, reflink shadow (XFS)"; label["qemu"] = "qemu-img create -b + rebase"
    label["qscan"] = "platter, qcow2 scan (guest over NBD)"; label["qbitmap"] = "platter, QEMU dirty bitmap (qcow2 over NBD)"
    for (i = 1; i <= n; i++) {
        k = name[i]; mw = median(w[k]); mf = median(f[k])
        printf "| %s | %.2f | %.2f | %s | %s | %s | %s | %.2f | %.0f%% |\n", label[k], mw, median(c[k]), mib(median(r[k])), mib(median(bb[k])), mib(median(rc[k])), mib(median(a[k])), mf, 100 * mw / mf
    }
}' "$RES"
if [ -f "$WORK/mismatch" ]; then echo; echo "RESTORE MISMATCH: $(cat "$WORK/mismatch")"; exit 1; fi
echo
echo "Restores of run 1 equal the changed image byte for byte (cmp)."
