#!/bin/bash
# platter on S3 object storage (a local 3-node Garage cluster) next to platter on a local
# repository, restic's own s3 backend on the same cluster, and the store's floor (a plain parallel
# PUT and GET of the same bytes, bench/s3-floor.py). Issue 13, "Proven against a real distributed store".
#
# usage: bench/s3.sh [-h]
#   env RUNS=3              runs (medians are reported); every run does all rows back to back
#       SIZE=1G             size of the workload image (the make-workload.sh mix scaled to SIZE;
#                           4G is make-workload.sh itself); incremental = make-workload.sh's change
#       WORKLOAD=path       an image of your own instead (copied; incremental = 5 % of it rewritten
#                           in 256 KiB writes at seeded offsets)
#       DIR=/tmp/platter-bench-s3   workload + scratch (the generated images are reused)
#       GARAGE_PORT_BASE=45000      ports of the cluster (BASE..BASE+22), started in DIR/cluster
#       ENV_FILE=path       use a running cluster (the env file cluster.sh wrote) instead
#       ENC=1               also an encrypted platter full backup to S3 (Argon2id at its cheapest)
#       RSS4G=1             also the peak RSS of a platter full backup to S3 of the standard 4 GiB
#                           workload (make-workload.sh base, 2 GiB on disk, once)
#       RESTORE_DIR=path    where restores are written (default a folder in /dev/shm, removed after)
#       NOBUILD=1  PLATTER=path (default <repo>/target/x86_64-unknown-linux-gnu/release/platter)  KEEP=1 (keep DIR/work and
#                           DIR/cluster; the cluster holds 3 copies of every upload: ~21 GiB for
#                           the default run, more with RSS4G=1)
#
# Garage settings (fixed by tests/garage/cluster.sh, printed with the results): 3 nodes on
# 127.0.0.1, replication_factor 3, consistency_mode consistent (quorum 2 of 3), db_engine lmdb,
# metadata_fsync and data_fsync off, compression_level none, block_size 1M. The S3 endpoint is
# node 1, plain HTTP, path-style, SigV4.
#
# Rows, per run: platter to a local repository (on disk, not tmpfs): full, incremental, restore;
# platter to S3 (init --plain): the same; [platter to S3, encrypted: full]; restic -r s3:... backup
# IMAGE (full), again after the change (incremental), restore latest --target DIR; the floor:
# s3-floor.py --runs 1 with the bytes platter's full backup stored on S3 (rounded up to 16 MiB),
# objects of 16 MiB, 4 in flight, PUT then GET.
# Restores (every tool's) write to RESTORE_DIR, a tmpfs by default (/dev/shm/...): the floor
# discards what it GETs, and this VM's disk (250-350 MB/s durable) would hide the software.
# Timing: /usr/bin/time -f '%e %U %S %M' (wall, user, sys, peak RSS); inputs are read into the page
# cache before each timed phase; restores are compared with cmp (untimed, after sync).
# MB/s = image size (10^6 bytes) / wall for backups and restores; for the floor, its bytes / wall.
#
# shellcheck disable=SC2016   # the timed commands are single-quoted on purpose (expanded by bash -c)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUNS=${RUNS:-3}
SIZE=${SIZE:-1G}
WORKLOAD=${WORKLOAD:-}
DIR=${DIR:-/tmp/platter-bench-s3}
ENC=${ENC:-1}
RSS4G=${RSS4G:-0}
NOBUILD=${NOBUILD:-0}
KEEP=${KEEP:-0}
PLATTER=${PLATTER:-$ROOT/target/x86_64-unknown-linux-gnu/release/platter}
export GARAGE_PORT_BASE=${GARAGE_PORT_BASE:-45000}
CLUSTER=$ROOT/tests/garage/cluster.sh

for a in "$@"; do
    case $a in
        -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $a (see --help)" >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }
if [ -z "$WORKLOAD" ] || [ "$RSS4G" = 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "run as root (make-workload.sh mounts a loop device), or set WORKLOAD" >&2; exit 1; }
fi
for c in restic python3 /usr/bin/time openssl mawk mkfs.ext4 debugfs; do
    command -v "$c" > /dev/null 2>&1 || { echo "needs $c (apt-get install restic time openssl mawk e2fsprogs)" >&2; exit 2; }
done
python3 -c 'import boto3' 2> /dev/null || { echo "needs python3 boto3 (for the floor and S3 listings)" >&2; exit 2; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
WORK=$DIR/work LOGS=$DIR/logs RES=$DIR/results.tsv
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
to_mib() { numfmt --from=iec "$1" | awk '{print int($1 / 1048576)}'; }

# ---------------------------------------------------------------- workload
# SRC = the image of the full backup, CHG = the same after the change (incremental, restore).
prng() { { openssl enc -aes-128-ctr -pass "pass:$1" -nosalt < /dev/zero 2> /dev/null || true; } | head -c "$2"; }
# make-workload.sh's base mix scaled to SIZE (same seeds, same mkfs options): 1/4 incompressible
# big files, med files of 8 MiB, small 16 KiB files, 1/8 unique log-like text, the rest free space.
scaled_base() { # DIR MIB
    local d=$1 mib=$2 S=$1/stage i n
    rm -rf "$S"; mkdir -p "$S"/data/{big,med,small,logs}
    for i in 0 1 2 3; do prng "big-$i" $((mib / 16))M > "$S/data/big/r256_$i.bin"; done
    n=$(( (60 * mib + 2048) / 4096 )); [ "$n" -ge 1 ] || n=1
    for i in $(seq -w 0 $((n - 1))); do prng "med-$i" 8M > "$S/data/med/r8_$i.bin"; done
    n=$(( (16 * mib + 2048) / 4096 )); [ "$n" -ge 1 ] || n=1
    for i in $(seq -w 0 $((n - 1))); do
        mkdir -p "$S/data/small/d$i"
        prng "small-$i" 2M | split -b 16384 -a 3 -d - "$S/data/small/d$i/s_"
    done
    n=$(( (32 * mib + 2048) / 4096 )); [ "$n" -ge 1 ] || n=1
    for i in $(seq -w 0 $((n - 1))); do
        { mawk -v seed=$((10#$i + 1)) -v bytes=16777216 -f "$HERE/gen-log.awk" || true; } | head -c 16M > "$S/data/logs/app_$i.log"
    done
    find "$S" -exec touch -h -d @1700000000 {} +
    chmod -R u=rwX,go=rX "$S"
    rm -f "$d/disk.img"
    truncate -s "${mib}M" "$d/disk.img"
    E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -F -q -L peerbench -U 5eedf00d-0000-4000-8000-000000000001 \
        -E hash_seed=5eedf00d-0000-4000-8000-000000000001,lazy_itable_init=0,lazy_journal_init=0,nodiscard,root_owner=0:0 \
        -d "$S" "$d/disk.img"
    rm -rf "$S"
    e2fsck -fn "$d/disk.img" > /dev/null 2>&1 || { echo "e2fsck failed on $d/disk.img" >&2; exit 1; }
    cp --sparse=always "$d/disk.img" "$d/disk0.img"
}
workload() { # sets SRC CHG
    local d
    if [ -n "$WORKLOAD" ]; then
        [ -f "$WORKLOAD" ] || { echo "WORKLOAD=$WORKLOAD is not a file" >&2; exit 2; }
        d=$DIR/own; mkdir -p "$d"
        SRC=$d/disk0.img CHG=$d/disk.img
        WL_DESC="$WORKLOAD; incremental: 5 % of it rewritten in 256 KiB writes at seeded offsets"
        local stamp; stamp="$(realpath "$WORKLOAD") $(stat -c '%s %Y' "$WORKLOAD")"
        if [ -f "$CHG" ] && [ "$(cat "$d/.stamp" 2> /dev/null)" = "$stamp" ]; then log "workload: reusing $d"; return; fi
        log "workload: copying $WORKLOAD and rewriting 5 % of the copy"
        rm -f "$d/.stamp"
        cp --sparse=always "$WORKLOAD" "$SRC"
        cp --sparse=always "$SRC" "$CHG"
        local size writes k off
        size=$(stat -c %s "$SRC"); writes=$(( size / 20 / 262144 )); [ "$writes" -ge 1 ] || writes=1
        mawk -v seed=4242 -v n="$writes" -v blocks=$(( size / 262144 )) \
            'BEGIN { srand(seed); for (k = 0; k < n; k++) print int(rand() * blocks) * 262144 }' > "$d/.changes.lst"
        k=0
        while read -r off; do
            prng "chg-$k" 256K | dd of="$CHG" bs=256K seek="$off" oflag=seek_bytes conv=notrunc status=none
            k=$((k + 1))
        done < "$d/.changes.lst"
        echo "$stamp" > "$d/.stamp"
        return
    fi
    local mib; mib=$(to_mib "$SIZE")
    d=$DIR/w$mib; mkdir -p "$d"
    SRC=$d/disk0.img CHG=$d/disk.img
    WL_DESC="make-workload.sh mix scaled to $mib MiB (ext4 on a sparse file: 1/4 incompressible big files, 8 MiB files, 16 KiB files, 1/8 log text, the rest free); incremental: make-workload.sh change (40 MiB of 256 KiB overwrites + a 10 MiB file)"
    [ "$mib" = 4096 ] && WL_DESC="make-workload.sh (the standard 4 GiB workload); incremental: its change (40 MiB of 256 KiB overwrites + a 10 MiB file)"
    if [ -f "$CHG" ] && [ -f "$d/.done" ]; then log "workload: reusing $d"; return; fi
    rm -f "$d/.done"
    log "workload: building $mib MiB"
    if [ "$mib" = 4096 ]; then
        DIR=$d "$HERE/make-workload.sh" all > "$d/.workload.log" 2>&1 || { cat "$d/.workload.log" >&2; exit 1; }
    else
        scaled_base "$d" "$mib" > "$d/.workload.log" 2>&1 || { cat "$d/.workload.log" >&2; exit 1; }
        DIR=$d "$HERE/make-workload.sh" change >> "$d/.workload.log" 2>&1 || { cat "$d/.workload.log" >&2; exit 1; }
    fi
    touch "$d/.done"
}
workload
export SRC CHG
IMG_BYTES=$(stat -c %s "$SRC")
log "workload: $SRC ($(du -h "$SRC" | cut -f1) allocated of $(du -h --apparent-size "$SRC" | cut -f1)), changed: $CHG"

# The cluster keeps 3 copies of everything uploaded (see stop_cluster): about 3 x RUNS x 5 x the
# image's allocated bytes (platter plain and encrypted, restic, the floor, the incrementals).
need=$(( 3 * RUNS * 5 * $(du -B1 "$SRC" | cut -f1) / 1073741824 + 1 ))
[ "$RSS4G" = 1 ] && need=$((need + 10))
avail=$(df -B1G --output=avail "$DIR" | tail -n 1 | tr -d ' ')
[ "$avail" -ge "$need" ] || log "WARNING: about $need GiB needed in $DIR (Garage's 3 copies of every upload), $avail GiB free"

# ---------------------------------------------------------------- platter
if [ "$NOBUILD" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release) > "$DIR/.cargo.log" 2>&1 || { tail -n 5 "$DIR/.cargo.log" >&2; exit 1; }
fi
[ -x "$PLATTER" ] || { echo "no platter binary at $PLATTER" >&2; exit 1; }
export PLATTER

# ---------------------------------------------------------------- cluster
STARTED=0
if [ -z "${ENV_FILE:-}" ]; then
    log "garage: starting 3 nodes in $DIR/cluster (ports $GARAGE_PORT_BASE..$((GARAGE_PORT_BASE + 22)))"
    "$CLUSTER" stop "$DIR/cluster" > /dev/null 2>&1 || true
    rm -rf "$DIR/cluster"
    GARAGE_WATCH_PID=$$ "$CLUSTER" start "$DIR/cluster" > "$DIR/.cluster.log" 2>&1 || { cat "$DIR/.cluster.log" >&2; exit 1; }
    ENV_FILE=$DIR/cluster/env STARTED=1
fi
# Garage frees the blocks of deleted objects only after a delay (its block GC), so the cluster's
# folder holds every byte uploaded, 3 times: removed with the cluster unless KEEP=1.
stop_cluster() {
    if [ -n "${R:-}" ]; then rm -rf "$R"; fi
    if [ "$STARTED" = 1 ]; then
        "$CLUSTER" stop "$DIR/cluster" > /dev/null 2>&1 || true
        [ "$KEEP" = 1 ] || rm -rf "$DIR/cluster"
    fi
}
trap stop_cluster EXIT
# shellcheck disable=SC1090
. "$ENV_FILE"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
BASEURL=$PLATTER_S3_ENDPOINT/$PLATTER_S3_BUCKET
export RESTIC_PASSWORD=platter-bench RESTIC_CACHE_DIR=$WORK/restic-cache

# s3py du|rm PREFIX: total bytes under PREFIX/ in the bucket, or delete everything under it.
s3py() {
    python3 - "$1" "$2" << 'EOF'
import os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["PLATTER_S3_ENDPOINT"], region_name=os.environ["AWS_REGION"],
                  config=Config(s3={"addressing_style": "path"}))
b, prefix = os.environ["PLATTER_S3_BUCKET"], sys.argv[2].rstrip("/") + "/"
total, keys = 0, []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b, Prefix=prefix):
    for o in page.get("Contents", []):
        total += o["Size"]; keys.append(o["Key"])
if sys.argv[1] == "du":
    print(total)
else:
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
EOF
}
export PLATTER_S3_ENDPOINT PLATTER_S3_BUCKET

# ---------------------------------------------------------------- measurement helpers
cache() { cat "$@" > /dev/null; }
dusb() { du -sb "$1" | cut -f1; }
jfield() { sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1" | head -n 1; }
# timed NAME CMD: sets T_WALL T_USER T_SYS T_RSS (KiB); returns CMD's status
timed() {
    local tf=$WORK/time.out rc=0
    /usr/bin/time -f '%e %U %S %M' -o "$tf" bash -c "$2" > "$LOGS/$1.stdout" 2> "$LOGS/$1.stderr" || rc=$?
    read -r T_WALL T_USER T_SYS T_RSS <<< "$(tail -n 1 "$tf")"
    return $rc
}
# record ROW PHASE RUN BYTES STATUS (uses T_*)
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$T_WALL" "$T_USER" "$T_SYS" "$T_RSS" "$4" "$5" >> "$RES"
    log "  $1 $2: ${T_WALL}s wall, $((T_RSS / 1024)) MiB rss, $(($4 / 1048576)) MiB, $5"
}
failed() { printf '%s\t%s\t%s\t-\t-\t-\t-\t-\tFAILED\n' "$1" "$2" "$3" >> "$RES"; log "  $1 $2: FAILED (see $LOGS/$1.$2.$3.stderr)"; }
# step ROW PHASE RUN CMD SIZE-FN: time CMD, record the bytes SIZE-FN prints (after - before)
step() {
    local before after
    before=$($5); sync
    if ! timed "$1.$2.$3" "$4"; then failed "$1" "$2" "$3"; return 1; fi
    sync; after=$($5)
    record "$1" "$2" "$3" $((after - before)) ok
}
restored() { # ROW RUN CMD FILE: time a restore into $R, compare FILE with $CHG
    local st=ok
    rm -rf "$R"; mkdir -p "$R"; sync
    if ! timed "$1.restore.$2" "$3"; then failed "$1" restore "$2"; return 1; fi
    sync
    [ -f "$4" ] && cmp -s "$4" "$CHG" || st=MISMATCH
    record "$1" restore "$2" "$(stat -c %s "$4" 2> /dev/null || echo 0)" "$st"
    if [ -n "${R:-}" ]; then rm -rf "$R"; fi
}

# platter finds the parent snapshot by source path + size: back up the same work file W twice.
bench_platter() { # ROW RUN REPO INIT-OPTIONS... (the size function is $SIZEFN)
    local row=$1 run=$2 repo=$3
    shift 3
    export REPO=$repo
    "$PLATTER" -r "$REPO" init --json "$@" > "$LOGS/$row.init.$run" 2>&1 || { failed "$row" full "$run"; return 0; }
    cp --sparse=always "$SRC" "$W"; sync; cache "$W"
    step "$row" full "$run" '"$PLATTER" -r "$REPO" backup "$W" --json' "$SIZEFN" || return 0
    [ "$row" = platter-s3-enc ] && return 0
    cp --sparse=always "$CHG" "$W"; sync; cache "$W"
    step "$row" incr "$run" '"$PLATTER" -r "$REPO" backup "$W" --json' "$SIZEFN" || return 0
    restored "$row" "$run" '"$PLATTER" -r "$REPO" restore latest "$R/r.img" --json' "$R/r.img" || true
}
bench_restic() { # RUN REPO
    export REPO=$2
    rm -rf "$RESTIC_CACHE_DIR"
    restic -r "$REPO" init > "$LOGS/restic-s3.init.$1" 2>&1 || { failed restic-s3 full "$1"; return 0; }
    cp --sparse=always "$SRC" "$W"; sync; cache "$W"
    step restic-s3 full "$1" 'restic -r "$REPO" backup "$W"' "$SIZEFN" || return 0
    cp --sparse=always "$CHG" "$W"; sync; cache "$W"
    step restic-s3 incr "$1" 'restic -r "$REPO" backup "$W"' "$SIZEFN" || return 0
    restored restic-s3 "$1" 'restic -r "$REPO" restore latest --target "$R"' "$R$W" || true
}
bench_floor() { # RUN MIB
    if ! timed "floor.$1" "python3 \"$HERE/s3-floor.py\" \"$ENV_FILE\" --mib $2 --object-mib 16 --parallel 4 --runs 1"; then
        failed floor-put full "$1"; failed floor-get restore "$1"; return 0
    fi
    local line put get
    line=$(grep -m1 'run 1:' "$LOGS/floor.$1.stdout")
    put=$(sed -n 's/.*PUT [0-9.]* MB\/s (\([0-9.]*\)s).*/\1/p' <<< "$line")
    get=$(sed -n 's/.*GET [0-9.]* MB\/s (\([0-9.]*\)s).*/\1/p' <<< "$line")
    local rss=$T_RSS
    T_WALL=$put T_USER=- T_SYS=- T_RSS=$rss; record floor-put full "$1" $(($2 * 1048576)) ok
    T_WALL=$get; record floor-get restore "$1" $(($2 * 1048576)) ok
    FLOOR_SETTINGS=$(sed -n 's/^s3-floor: cluster: //p' "$LOGS/floor.$1.stdout")
}

# ---------------------------------------------------------------- main loop
rm -rf "$WORK" "$LOGS"; mkdir -p "$WORK" "$LOGS"
: > "$RES"
export W=$WORK/w.img R=${RESTORE_DIR:-/dev/shm/platter-bench-restore-$$}
TAG=bench-s3-$$-$(date +%s)
START=$(date +%s)
FLOOR_SETTINGS=
log "runs=$RUNS; S3 at $BASEURL (prefix $TAG/)"
for run in $(seq 1 "$RUNS"); do
    log "run $run/$RUNS"
    # platter, local repository
    rm -rf "$WORK/local"
    LOCALREPO=$WORK/local
    local_size() { if [ -d "$LOCALREPO" ]; then dusb "$LOCALREPO"; else echo 0; fi; }
    SIZEFN=local_size bench_platter platter-local "$run" "$LOCALREPO" --plain
    rm -rf "$WORK/local"
    # platter, S3
    P3=$TAG/$run/platter
    s3_size() { s3py du "$P3"; }
    SIZEFN=s3_size bench_platter platter-s3 "$run" "s3:$BASEURL/$P3" --plain
    FULL_BYTES=$(awk -F'\t' -v r="$run" '$1 == "platter-s3" && $2 == "full" && $3 == r && $9 != "FAILED" {print $8}' "$RES")
    FLOOR_MIB=$(( (${FULL_BYTES:-0} + 16 * 1048576 - 1) / (16 * 1048576) * 16 ))
    s3py rm "$P3"
    if [ "$ENC" = 1 ]; then
        P3=$TAG/$run/platter-enc
        export PLATTER_PASSWORD_FILE=$WORK/passphrase
        echo "benchmark passphrase" > "$PLATTER_PASSWORD_FILE"
        SIZEFN=s3_size bench_platter platter-s3-enc "$run" "s3:$BASEURL/$P3" --kdf-memory 8M --kdf-iterations 1
        unset PLATTER_PASSWORD_FILE
        s3py rm "$P3"
    fi
    # restic, S3
    P3=$TAG/$run/restic
    SIZEFN=s3_size bench_restic "$run" "s3:$BASEURL/$P3"
    s3py rm "$P3"
    # the floor, same bytes as platter's full backup on S3
    [ "$FLOOR_MIB" -ge 16 ] || FLOOR_MIB=16
    bench_floor "$run" "$FLOOR_MIB"
    rm -f "$W"; rm -rf "$R" "$RESTIC_CACHE_DIR"
done

# ---------------------------------------------------------------- 4 GiB: peak RSS to S3
if [ "$RSS4G" = 1 ]; then
    log "4 GiB: the standard workload (make-workload.sh base) for the peak RSS of a full backup to S3"
    d4=$DIR/w4096
    if [ ! -f "$d4/.base" ]; then
        mkdir -p "$d4"
        DIR=$d4 "$HERE/make-workload.sh" base > "$d4/.workload.log" 2>&1 || { cat "$d4/.workload.log" >&2; exit 1; }
        touch "$d4/.base"
    fi
    P3=$TAG/4g/platter
    export REPO=s3:$BASEURL/$P3 W4=$d4/disk0.img
    if "$PLATTER" -r "$REPO" init --plain --json > "$LOGS/platter-s3-4g.init" 2>&1; then
        cache "$W4"
        SIZEFN=s3_size step platter-s3-4GiB full 1 '"$PLATTER" -r "$REPO" backup "$W4" --json' s3_size || true
        IMG4_BYTES=$(stat -c %s "$W4")
    else failed platter-s3-4GiB full 1; fi
    s3py rm "$P3"
fi
[ "$KEEP" = 1 ] || rm -rf "$WORK"

# ---------------------------------------------------------------- report
echo
echo "# platter on S3 — $(date -u '+%Y-%m-%d %H:%M UTC'), $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) CPU, $(free -g | awk '/^Mem/{print $2}') GiB RAM, RUNS=$RUNS (medians), $(( $(date +%s) - START )) s"
echo
echo "Workload: $WL_DESC; image $(numfmt --to=iec "$IMG_BYTES"), $(du -h "$SRC" | cut -f1) allocated."
echo "Garage: 3 nodes on 127.0.0.1 (tests/garage/cluster.sh): ${FLOOR_SETTINGS:-replication_factor=3, consistency_mode=consistent, db_engine=lmdb, metadata_fsync=false, data_fsync=false, compression_level=none, block_size=1M}; plain HTTP, path-style."
echo "platter: $("$PLATTER" --version 2> /dev/null); restic: $(restic version | cut -d' ' -f1-2); floor: bench/s3-floor.py (boto3 put_object/get_object, 16 MiB objects, 4 in flight)."
echo "Each run does every row back to back (local, S3, S3 encrypted, restic, floor); the machine is shared, so compare within a run and by medians."
echo
python3 - "$RES" "$IMG_BYTES" "${IMG4_BYTES:-0}" << 'EOF'
import sys, statistics
res, img, img4 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {}
for line in open(res):
    f = line.rstrip("\n").split("\t")
    rows.setdefault((f[0], f[1]), []).append(f)
names = {"platter-local": "platter, local repository", "platter-s3": "platter, S3 (plain)",
         "platter-s3-enc": "platter, S3 (encrypted, Argon2id 8 MiB x1)", "restic-s3": "restic, S3",
         "floor-put": "floor: PUT (s3-floor.py)", "floor-get": "floor: GET (s3-floor.py)",
         "platter-s3-4GiB": "platter, S3 (plain), standard 4 GiB workload"}
order = ["platter-local", "platter-s3", "platter-s3-enc", "restic-s3", "floor-put", "floor-get", "platter-s3-4GiB"]
med = {}
print("| row | phase | wall s (median) | min-max | MB/s | peak RSS MiB | MiB stored/moved | check |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in order:
    for ph in ("full", "incr", "restore"):
        runs = rows.get((r, ph))
        if not runs:
            continue
        ok = [x for x in runs if x[8] != "FAILED"]
        if not ok:
            print(f"| {names[r]} | {ph} | FAILED | | | | | |"); continue
        walls = [float(x[3]) for x in ok]
        w = statistics.median(walls); med[(r, ph)] = w
        rss = "-" if r.startswith("floor") else f"{statistics.median([int(x[6]) for x in ok]) / 1024:.0f}"
        byts = statistics.median([int(x[7]) for x in ok]) / 1048576
        base = int(ok[0][7]) if r.startswith("floor") else (img4 if r.endswith("4GiB") else img)
        mbs = base / 1e6 / w if w > 0 else float("inf")
        checks = sorted(set(x[8] for x in runs))
        print(f"| {names[r]} | {ph} | {w:.2f} | {min(walls):.2f}-{max(walls):.2f} | {mbs:.0f} | {rss} | {byts:.1f} | {'/'.join(checks)} ({len(ok)} of {len(runs)}) |")
print()
def ratio(label, a, b, goal=None, more_is_better=True):
    if a not in med or b not in med:
        print(f"- {label}: n/a"); return
    x = med[b] / med[a] if more_is_better else med[a] / med[b]
    g = ""
    if goal is not None:
        g = f" (goal {'>=' if more_is_better else '<='} {goal}x: {'PASS' if (x >= goal if more_is_better else x <= goal) else 'MISS'})"
    print(f"- {label}: {x:.2f}x{g}")
print("Ratios (medians):")
print()
ratio("restic S3 full / platter S3 full", ("platter-s3", "full"), ("restic-s3", "full"), 3)
ratio("restic S3 incremental / platter S3 incremental", ("platter-s3", "incr"), ("restic-s3", "incr"))
ratio("restic S3 restore / platter S3 restore", ("platter-s3", "restore"), ("restic-s3", "restore"), 3)
ratio("platter S3 full / floor PUT of the same bytes", ("platter-s3", "full"), ("floor-put", "full"), 1.5, False)
ratio("platter S3 restore / floor GET of the same bytes", ("platter-s3", "restore"), ("floor-get", "restore"), 1.5, False)
ratio("platter S3 full / platter local full", ("platter-s3", "full"), ("platter-local", "full"), None, False)
ratio("platter S3 restore / platter local restore", ("platter-s3", "restore"), ("platter-local", "restore"), None, False)
if ("platter-s3-enc", "full") in med:
    ratio("platter S3 encrypted full / plain full", ("platter-s3-enc", "full"), ("platter-s3", "full"), None, False)
r4 = rows.get(("platter-s3-4GiB", "full"))
if r4 and r4[0][8] != "FAILED":
    m = int(r4[0][6]) / 1024
    print(f"- peak RSS of a full backup to S3, standard 4 GiB workload: {m:.0f} MiB (goal <= 200 MiB: {'PASS' if m <= 200 else 'MISS'})")
EOF
