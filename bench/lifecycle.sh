#!/bin/bash
# The 3-2-1 round trip, timed: nightly backups of a changing image, a copy
# to a second repository, retention, prune, damage, verify, repair, and a
# restore from the copy alone. Prints one line per step (seconds, sizes).
#
# usage: bench/lifecycle.sh
#   env SIZE_MIB=1024   image size     NIGHTS=7   backups     CHANGE_MIB=64   rewritten per night
#       DIR=/tmp/platter-lifecycle    scratch (removed at the end unless KEEP=1)
#       NOBUILD=1   use the existing target/x86_64-unknown-linux-gnu/release/platter
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024} NIGHTS=${NIGHTS:-7} CHANGE_MIB=${CHANGE_MIB:-64}
DIR=${DIR:-/tmp/platter-lifecycle}
[ "${NOBUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release --quiet)
P=$ROOT/target/x86_64-unknown-linux-gnu/release/platter
rm -rf "$DIR"; mkdir -p "$DIR"
A=$DIR/repo B=$DIR/usb IMG=$DIR/disk.img
size() { du -sb "$1" | awk '{printf "%.1f MiB", $1/1048576}'; }
step() { # step NAME COMMAND...: runs it, prints its wall time
    local name=$1; shift
    local t0; t0=$(date +%s.%N)
    "$@" >"$DIR/last.out" 2>&1 || { cat "$DIR/last.out"; echo "FAILED: $name"; exit 1; }
    printf '%-34s %6.2f s   %s\n' "$name" "$(echo "$(date +%s.%N) - $t0" | bc)" "${NOTE:-}"
}
head -c $((SIZE_MIB << 20)) /dev/urandom >"$IMG"
"$P" -r "$A" init --plain >/dev/null
"$P" -r "$B" init --plain --compression none >/dev/null
for n in $(seq 1 "$NIGHTS"); do
    [ "$n" = 1 ] || head -c $((CHANGE_MIB << 20)) /dev/urandom |
        dd of="$IMG" bs=1M seek=$(( (n * 97) % (SIZE_MIB - CHANGE_MIB) )) conv=notrunc status=none
    step "backup night $n" "$P" -r "$A" backup "$IMG"
done
NOTE="repo $(size "$A/data")" step "(repository after $NIGHTS nights)" true
NOTE="" step "copy --to usb (all)" "$P" -r "$A" copy --to "$B"
NOTE="usb $(size "$B/data"): $(tail -1 "$DIR/last.out")" step "(copy result)" true
step "copy again (nothing new)" "$P" -r "$A" copy --to "$B"
NOTE="$(tail -1 "$DIR/last.out")" step "(second copy result)" true
step "forget --keep-last 3" "$P" -r "$A" forget --keep-last 3
step "prune" "$P" -r "$A" prune
NOTE="repo $(size "$A/data"): $(tail -1 "$DIR/last.out")" step "(prune result)" true
pack=$(find "$A/data" -type f -name '[0-9a-f]*' | head -1)
printf 'DAMAGED!' | dd of="$pack" bs=1 seek=100000 conv=notrunc status=none
if "$P" -r "$A" verify --read-data >"$DIR/verify.out" 2>&1; then echo "verify missed the damage"; exit 1; fi
NOTE="$(grep -c 'affects snapshot' "$DIR/verify.out") damaged range(s) named" step "(verify --read-data: damage)" true
step "repair --from usb" "$P" -r "$A" repair --from "$B"
NOTE="$(tail -1 "$DIR/last.out")" step "(repair result)" true
step "verify --read-data (clean)" "$P" -r "$A" verify --read-data
rm -rf "$A"
step "restore latest from usb only" "$P" -r "$B" restore latest "$DIR/restored.img"
cmp "$IMG" "$DIR/restored.img" && echo "restored image equals the source"
[ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"
