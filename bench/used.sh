#!/bin/bash
# Filesystem-aware imaging next to partclone, on the same filesystems: the
# 4 GiB ext4 workload of make-workload.sh (disk0.img, a sparse file), the
# same through a read-only loop device (a real block device: no holes to
# skip), and a 512 MiB FAT32 image with files. Per tool: what it counts as
# used, bytes read (platter), wall time (median of RUNS), bytes stored,
# peak RSS. `platter-raw` is `backup --raw` (every byte but holes).
#
# usage: bench/used.sh      env RUNS=3  DIR=/tmp/platter-bench  NOBUILD=1   (root: loop device)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3} DIR=${DIR:-/tmp/platter-bench}
[ "${NOBUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release --quiet)
P=$ROOT/target/x86_64-unknown-linux-gnu/release/platter
command -v partclone.ext4 >/dev/null || { echo "needs partclone (apt-get install partclone)"; exit 2; }
[ -f "$DIR/disk0.img" ] || DIR=$DIR "$ROOT/bench/make-workload.sh" base
FAT=$DIR/fat32.img
if [ ! -f "$FAT" ]; then
    truncate -s 512M "$FAT"; mkfs.fat -F 32 "$FAT" >/dev/null
    for n in 1 2 3 4 5 6 7 8; do head -c $((n * 9))M /dev/urandom >"$DIR/f$n"; done
    MTOOLS_SKIP_CHECK=1 mcopy -i "$FAT" "$DIR"/f? ::/; rm -f "$DIR"/f?
    MTOOLS_SKIP_CHECK=1 mdel -i "$FAT" ::/f3 ::/f6
fi
S=$DIR/used-scratch
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() { # timed CMD...: stdout to $S/out, wall seconds and peak RSS KiB to $S/t
    /usr/bin/time -f '%e %M' -o "$S/t" "$@" >"$S/out" 2>"$S/err" || { cat "$S/err"; exit 1; }
}
images=("ext4:$DIR/disk0.img:ext4")
LOOP=
if [ "$(id -u)" = 0 ]; then
    LOOP=$(losetup -r -f --show "$DIR/disk0.img")
    trap 'losetup -d "$LOOP"' EXIT
    images+=("ext4-dev:$LOOP:ext4")
fi
images+=("fat32:$FAT:fat32")
printf '%-9s %-12s %10s %10s %8s %11s %8s\n' image tool "used MiB" "read MiB" "wall s" "stored MiB" "RSS MiB"
for entry in "${images[@]}"; do
    IFS=: read -r name img pc <<<"$entry"
    cat "$img" >/dev/null    # page cache, as for every tool
    for tool in platter platter-raw partclone; do
        times=(); rss=0; stored=0; read=-
        for _ in $(seq "$RUNS"); do
            rm -rf "$S"; mkdir -p "$S"
            if [ $tool = partclone ]; then
                timed "partclone.$pc" -c -s "$img" -o "$S/out.pc" -q
                stored=$(stat -c %s "$S/out.pc")
                # "Space in use: 2.3 GB = 561251 Blocks" and "Block size: 4096 Byte"
                used=$(partclone.info -s "$S/out.pc" 2>&1 | awk '
                    /Space in use:/ {for (i = 1; i <= NF; i++) if ($i == "=") blocks = $(i + 1)}
                    /Block size:/ {size = $3}
                    END {printf "%.0f", blocks * size}')
            else
                "$P" -r "$S/repo" init --plain >/dev/null
                flag=; [ $tool = platter-raw ] && flag=--raw
                timed "$P" -r "$S/repo" --json backup $flag "$img"
                read=$(awk -F': ' '/"bytes_read"/ {gsub(/,/, "", $2); printf "%.1f", $2 / 1048576}' "$S/out")
                stored=$(du -sb "$S/repo/data" | cut -f1)
                used=$("$P" --json inspect "$img" | awk -F': ' '/"used"/ {gsub(/,/, "", $2); print $2; exit}')
            fi
            read -r wall kib <"$S/t"; times+=("$wall"); rss=$kib
        done
        printf '%-9s %-12s %10.1f %10s %8s %11.1f %8.0f\n' "$name" "$tool" "$(echo "$used / 1048576" | bc -l)" \
            "$read" "$(printf '%s\n' "${times[@]}" | median)" "$(echo "$stored / 1048576" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
    done
done
rm -rf "$S"
