#!/bin/bash
# Benchmark platter next to peer tools on the standard workload (see make-workload.sh), in one run.
#
# usage: bench/run.sh [--big] [-h]
#   env RUNS=3            runs per tool (medians are reported)
#       TOOLS="platter platterenc cat pipe lz4 zstd partclone qemu qemudirect restic borg changes"   subset / order
#                            (changes: bench/change-sources.sh after the table, the incremental with and
#                             without each change source next to qemu-img's; needs xfsprogs)
#                            (qemudirect: qemu-img convert -t none, a durable restore like platter's;
#                             platterenc: platter with an encrypted repository, Argon2id at its cheapest
#                             so that the times show the data path; unlocking with the default
#                             Argon2id, calibrated at init to about 0.5 s, costs that much more
#                             per command, timed once as "unlock")
#       DIR=/tmp/platter-bench   workload + scratch directory (disk0.img/disk.img are reused
#                                when their sha256 matches)
#       SIZE16=1 (or --big)  also measure platter's peak RSS on a 16 GiB sparse image
#       NOBUILD=1            do not run `cargo build --release` (use the existing binary)
#       PLATTER=path         platter binary (default: <repo>/target/x86_64-unknown-linux-gnu/release/platter)
#       KEEP=1               keep the scratch outputs of the last run (default: removed)
#
# Per tool and phase (full, incremental, restore): wall s, CPU s (user+sys), peak RSS, bytes.
# Timing: /usr/bin/time -f '%e %U %S %M' around `bash -c PIPELINE`; CPU is the sum over all
# processes of the pipeline; peak RSS (%M) of bash -c is the max RSS over its child processes
# (getrusage RUSAGE_CHILDREN semantics), i.e. the largest single process, not the sum.
# Inputs (images / backups) are read into the page cache before every timed phase; restores are
# timed without the final flush to disk (sync runs untimed between phases).
# Bytes added to a repository = `du -sb` delta of the tool's output directory (same for all tools).
#
# shellcheck disable=SC2016   # the timed commands are single-quoted on purpose (expanded by bash -c)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-platter platterenc cat pipe lz4 zstd partclone qemu qemudirect restic borg changes}
DIR=${DIR:-/tmp/platter-bench}
SIZE16=${SIZE16:-0}
NOBUILD=${NOBUILD:-0}
KEEP=${KEEP:-0}
PLATTER=${PLATTER:-$ROOT/target/x86_64-unknown-linux-gnu/release/platter}
REF_SHA=c280c9b48d51f79455d1736660432e605e364fd8819944493cba3e2a2887b1a6

for a in "$@"; do
    case $a in
        --big) SIZE16=1 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $a (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (make-workload.sh mounts a loop device; caches)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }
for t in $TOOLS; do
    case $t in platter|platterenc|cat|pipe|lz4|zstd|partclone|qemu|qemudirect|restic|borg|changes) ;;
        *) echo "unknown tool '$t' (known: platter platterenc cat pipe lz4 zstd partclone qemu qemudirect restic borg changes)" >&2; exit 2 ;;
    esac
done
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
export SRC=$DIR/disk0.img CHG=$DIR/disk.img
WORK=$DIR/work            # per-run scratch (outputs, repositories, restores)
LOGS=$DIR/logs            # small logs of the last run (stdout/stderr of every timed command)
RES=$DIR/results.tsv
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- dependencies
need_pkgs=()
need() { command -v "$1" > /dev/null 2>&1 || need_pkgs+=("$2"); }
[ -x /usr/bin/time ] || need_pkgs+=(time)
for t in $TOOLS; do
    case $t in
        lz4) need lz4 lz4 ;;
        zstd) need zstd zstd ;;
        partclone) need partclone.ext4 partclone ;;
        qemu) need qemu-img qemu-utils ;;
        changes) need qemu-img qemu-utils; need mkfs.xfs xfsprogs; need python3 python3 ;;
        restic) need restic restic ;;
        borg) need borg borgbackup ;;
    esac
done
# make-workload.sh needs openssl, mawk, mke2fs/debugfs
need openssl openssl; need mawk mawk; need mkfs.ext4 e2fsprogs; need debugfs e2fsprogs
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing: ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" > /dev/null
fi

# ---------------------------------------------------------------- workload
# disk0.img is reused when its sha256 matches the reference; disk.img (changed) is reused when it
# matches the hash recorded when it was made (it is not byte-reproducible, see make-workload.sh).
sha() { sha256sum < "$1" | cut -d' ' -f1; }
workload() {
    if [ -f "$SRC" ] && [ "$(sha "$SRC")" = "$REF_SHA" ]; then
        if [ -f "$CHG" ] && [ -f "$DIR/.disk.img.sha256" ] && [ "$(sha "$CHG")" = "$(cat "$DIR/.disk.img.sha256")" ]; then
            log "workload: reusing $SRC and $CHG"
            return
        fi
        log "workload: reusing $SRC, re-applying the change to a copy"
        rm -f "$CHG" "$DIR/.disk.img.sha256"
        cp --sparse=always "$SRC" "$CHG"
        DIR=$DIR "$HERE/make-workload.sh" change > "$DIR/.workload.log" 2>&1
    else
        log "workload: building (about 1 minute)"
        rm -f "$DIR/.disk.img.sha256"
        DIR=$DIR "$HERE/make-workload.sh" all > "$DIR/.workload.log" 2>&1 \
            || { cat "$DIR/.workload.log" >&2; exit 1; }
        grep -q 'matches the reference' "$DIR/.workload.log" || log "WARNING: disk0.img differs from the reference image"
    fi
    sha "$CHG" > "$DIR/.disk.img.sha256"
}
workload
sync                       # no writeback of the workload step during the first measurement

# ---------------------------------------------------------------- platter binary
PLATTER_OK=0
if has_tool platter || has_tool platterenc || has_tool changes || [ "$SIZE16" = 1 ]; then
    if [ "$NOBUILD" != 1 ]; then
        log "cargo build --release"
        if ! (cd "$ROOT" && cargo build --release) > "$DIR/.cargo.log" 2>&1; then
            log "cargo build FAILED (platter rows will say FAILED); last lines of $DIR/.cargo.log:"
            tail -n 5 "$DIR/.cargo.log" >&2
        fi
    fi
    if [ -x "$PLATTER" ]; then PLATTER_OK=1; else log "no platter binary at $PLATTER: platter rows will say FAILED"; fi
fi
export PLATTER

# ---------------------------------------------------------------- measurement helpers
export RESTIC_PASSWORD=platter-bench          # restic cannot run unencrypted: fixed password
export BORG_PASSPHRASE='' BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR=$WORK/borg-base RESTIC_CACHE_DIR=$WORK/restic-cache
export O=$WORK/out R=$WORK/restore            # O: the tool's output dir/repo, R: restore dir

cache() { cat "$@" > /dev/null; }                            # read files into the page cache
cache_dir() { find "$1" -type f -exec cat {} + > /dev/null; }
dusb() { du -sb "$1" | cut -f1; }

# timed TOOL PHASE RUN CMD : run CMD under /usr/bin/time; sets T_WALL T_USER T_SYS T_RSS (KiB), returns CMD's status
timed() {
    local tf=$WORK/time.out rc=0 line
    /usr/bin/time -f '%e %U %S %M' -o "$tf" bash -c "$4" > "$LOGS/$1.$2.stdout" 2> "$LOGS/$1.$2.stderr" || rc=$?
    line=$(tail -n 1 "$tf")          # on failure time writes "Command exited with ..." first
    read -r T_WALL T_USER T_SYS T_RSS <<< "$line"
    return $rc
}
# record TOOL PHASE RUN BYTES EXTRA STATUS (uses T_*)
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$T_WALL" "$T_USER" "$T_SYS" "$T_RSS" "$4" "$5" "$6" >> "$RES"
    log "  $1 $2: ${T_WALL}s wall, $(awk -v u="$T_USER" -v s="$T_SYS" 'BEGIN{printf "%.2f", u + s}')s cpu, $((T_RSS / 1024)) MiB rss, $(( $4 / 1048576 )) MiB, $6"
}
failed() { printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\tFAILED\n' "$1" "$2" "$3" >> "$RES"; log "  $1 $2: FAILED (see $LOGS/$1.$2.stderr)"; }
jfield() { sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1" | head -n 1; }

# phase TOOL PHASE RUN CMD BYTES-FN [EXTRA-FN] : cache inputs (done by caller), time, record
# full/incr: bytes = du -sb of $O after (full) / delta (incr).  restore: compare with the source.
do_backup() {  # TOOL PHASE RUN CMD
    local before after extra=-
    before=$(dusb "$O")
    sync
    if ! timed "$1" "$2" "$3" "$4"; then failed "$1" "$2" "$3"; return 1; fi
    sync
    after=$(dusb "$O")
    if [ "$1" = platter ]; then extra=$(jfield "$LOGS/$1.$2.stdout" bytes_new); extra=${extra:--}; fi
    if [ "$2" = full ]; then record "$1" "$2" "$3" "$after" "$extra" ok
    else record "$1" "$2" "$3" $((after - before)) "$extra" ok; fi
}
do_restore() {  # TOOL RUN CMD RESTORED-FILE REFERENCE
    local st=ok
    rm -rf "$R"; mkdir -p "$R"
    sync
    if ! timed "$1" restore "$2" "$3"; then failed "$1" restore "$2"; return 1; fi
    sync
    if [ ! -f "$4" ] || ! cmp -s "$4" "$5"; then st=MISMATCH; fi
    record "$1" restore "$2" "$(stat -c %s "$4" 2> /dev/null || echo 0)" - "$st"
    rm -rf "$R"
}

# bench_TOOL RUN : full [, incr], restore of one tool (fresh output dir)
bench_cat() {
    cache "$SRC"
    if timed cat full "$1" 'cat "$SRC" > /dev/null'; then record cat full "$1" 0 - ok; else failed cat full "$1"; fi
}
bench_pipe() {   # cost of moving the image through a pipe (dd | lz4, zstd, restic, borg pay it)
    cache "$SRC"
    if timed pipe full "$1" 'dd if="$SRC" bs=4M status=none | cat > /dev/null'; then record pipe full "$1" 0 - ok; else failed pipe full "$1"; fi
}
bench_lz4() {
    cache "$SRC"
    do_backup lz4 full "$1" 'dd if="$SRC" bs=4M status=none | lz4 -1 -q > "$O/full.lz4"' || return 0
    cache "$O/full.lz4"
    do_restore lz4 "$1" 'lz4 -d -q "$O/full.lz4" "$R/r.img"' "$R/r.img" "$SRC" || true
}
bench_zstd() {
    cache "$SRC"
    do_backup zstd full "$1" 'dd if="$SRC" bs=4M status=none | zstd -1 -T2 -q > "$O/full.zst"' || return 0
    cache "$O/full.zst"
    do_restore zstd "$1" 'zstd -d -q "$O/full.zst" -o "$R/r.img"' "$R/r.img" "$SRC" || true
}
bench_partclone() {
    cache "$SRC"
    do_backup partclone full "$1" 'partclone.ext4 -c -s "$SRC" -O "$O/full.pcl" -L "$WORK/partclone.log"' || return 0
    cache "$O/full.pcl"
    do_restore partclone "$1" 'partclone.ext4 -r -W -s "$O/full.pcl" -o "$R/r.img" -L "$WORK/partclone.log"' "$R/r.img" "$SRC" || true
}
bench_qemu() {
    cache "$SRC"
    do_backup qemu full "$1" 'qemu-img convert -O qcow2 "$SRC" "$O/full.qcow2"' || return 0
    cache "$CHG" "$O/full.qcow2"
    do_backup qemu incr "$1" 'qemu-img create -q -f qcow2 -b "$CHG" -F raw "$O/incr.qcow2" && qemu-img rebase -b "$O/full.qcow2" -F qcow2 "$O/incr.qcow2"' || true
    cache "$O/full.qcow2"
    do_restore qemu "$1" 'qemu-img convert -O raw "$O/full.qcow2" "$R/r.img"' "$R/r.img" "$SRC" || true
}
bench_qemudirect() {   # the qemu-img restore written durably (O_DIRECT, -t none), as platter writes
    qemu-img convert -O qcow2 "$SRC" "$O/full.qcow2" || { failed qemudirect restore "$1"; return 0; }
    cache "$O/full.qcow2"
    do_restore qemudirect "$1" 'qemu-img convert -t none -O raw "$O/full.qcow2" "$R/r.img"' "$R/r.img" "$SRC" || true
}
bench_restic() {
    restic -r "$O" init > "$LOGS/restic.init" 2>&1 || { failed restic full "$1"; return 0; }
    cache "$SRC"
    do_backup restic full "$1" 'restic -r "$O" backup --stdin --stdin-filename disk.img < "$SRC"' || return 0
    cache "$CHG"
    do_backup restic incr "$1" 'restic -r "$O" backup --stdin --stdin-filename disk.img < "$CHG"' || true
    cache_dir "$O"
    do_restore restic "$1" 'restic -r "$O" restore latest --target "$R"' "$R/disk.img" "$CHG" || true
}
bench_borg() {
    borg init -e none "$O" > "$LOGS/borg.init" 2>&1 || { failed borg full "$1"; return 0; }
    cache "$SRC"
    do_backup borg full "$1" 'borg create --compression lz4 "$O::full" - < "$SRC"' || return 0
    cache "$CHG"
    do_backup borg incr "$1" 'borg create --compression lz4 "$O::incr" - < "$CHG"' || true
    cache_dir "$O"
    do_restore borg "$1" 'borg extract --stdout "$O::incr" > "$R/r.img"' "$R/r.img" "$CHG" || true
}
# platter finds the parent snapshot by source path + size: back up the same work file W twice.
# $2: the tool's name in the results (platter, platterenc); $3...: extra init options.
bench_platter_as() {
    local run=$1 tool=$2 p
    shift 2
    if [ "$PLATTER_OK" != 1 ]; then for p in full incr restore; do failed "$tool" "$p" "$run"; done; return 0; fi
    export W=$WORK/w.img
    rm -rf "$O"
    "$PLATTER" -r "$O" init --json "$@" > "$LOGS/$tool.init" 2>&1 || { for p in full incr restore; do failed "$tool" "$p" "$run"; done; return 0; }
    cp --sparse=always "$SRC" "$W"; sync
    cache "$W"
    do_backup "$tool" full "$run" '"$PLATTER" -r "$O" backup "$W" --json' || { failed "$tool" incr "$run"; failed "$tool" restore "$run"; return 0; }
    cp --sparse=always "$CHG" "$W"; sync
    cache "$W"
    do_backup "$tool" incr "$run" '"$PLATTER" -r "$O" backup "$W" --json' || true
    cache_dir "$O"
    do_restore "$tool" "$run" '"$PLATTER" -r "$O" restore latest "$R/r.img" --json' "$R/r.img" "$CHG" || true
    rm -f "$W"
}
bench_platter() { bench_platter_as "$1" platter --plain; }
bench_platterenc() {
    export PLATTER_PASSWORD_FILE=$WORK/passphrase
    echo "benchmark passphrase" > "$PLATTER_PASSWORD_FILE"
    bench_platter_as "$1" platterenc --kdf-memory 8M --kdf-iterations 1
    # What a command pays to unlock with the default Argon2id (256 MiB, passes calibrated at init to about 0.5 s).
    rm -rf "$O"
    "$PLATTER" -r "$O" init --json > "$LOGS/platterenc.unlock.init" 2>&1 &&
        timed platterenc unlock "$1" '"$PLATTER" -r "$O" snapshots --json' &&
        record platterenc unlock "$1" 0 - ok
    unset PLATTER_PASSWORD_FILE
}

# ---------------------------------------------------------------- main loop
rm -rf "$WORK" "$LOGS"; mkdir -p "$WORK" "$LOGS"
: > "$RES"
START=$(date +%s)
log "runs=$RUNS tools: $TOOLS"
for run in $(seq 1 "$RUNS"); do
    log "run $run/$RUNS"
    for t in $TOOLS; do
        [ "$t" = changes ] && continue          # its own runs, after the table
        rm -rf "$O" "$R" "$BORG_BASE_DIR" "$RESTIC_CACHE_DIR"
        mkdir -p "$O"
        if [ "$t" = restic ] || [ "$t" = borg ]; then rmdir "$O"; fi     # they create their repo dir
        "bench_$t" "$run"
        if [ "$KEEP" != 1 ] || [ "$run" != "$RUNS" ]; then rm -rf "$O" "$R" "$BORG_BASE_DIR" "$RESTIC_CACHE_DIR"; fi
    done
done

# ---------------------------------------------------------------- 16 GiB mode (platter peak RSS)
BIG=-
if [ "$SIZE16" = 1 ]; then
    log "16 GiB mode: 4 copies of disk0.img back to back in a sparse file"
    BIGIMG=$WORK/big16.img
    rm -f "$BIGIMG"
    for i in 0 1 2 3; do dd if="$SRC" of="$BIGIMG" bs=4M seek=$((i * 1024)) conv=sparse,notrunc status=none; done
    truncate -s 16G "$BIGIMG"
    export W=$BIGIMG
    rm -rf "$O"
    if [ "$PLATTER_OK" = 1 ] && "$PLATTER" -r "$O" init --plain --json > "$LOGS/platter.init" 2>&1 \
        && timed platter16 full 1 '"$PLATTER" -r "$O" backup "$W" --json'; then
        record platter16 full 1 "$(dusb "$O")" "$(jfield "$LOGS/platter16.full.stdout" bytes_new)" ok
        if timed platter16 restore 1 'mkdir -p "$R" && "$PLATTER" -r "$O" restore latest "$R/r.img" --json'; then
            st=ok; cmp -s "$R/r.img" "$BIGIMG" || st=MISMATCH
            record platter16 restore 1 "$(stat -c %s "$R/r.img")" - "$st"
        else failed platter16 restore 1; fi
    else
        failed platter16 full 1; failed platter16 restore 1
    fi
    rm -rf "$O" "$R" "$BIGIMG"
    BIG=1
fi
[ "$KEEP" = 1 ] || rm -rf "$WORK"

# ---------------------------------------------------------------- report
echo
echo "# platter benchmark — $(date -u '+%Y-%m-%d %H:%M UTC'), $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) CPU, $(free -g | awk '/^Mem/{print $2}') GiB RAM, RUNS=$RUNS (medians), $(( $(date +%s) - START )) s"
echo
echo "Workload: make-workload.sh (4 GiB ext4 image, 2051 MiB allocated; incremental = the ~1 % change, 48.6 MiB in 197 1 MiB regions)."
echo "Inputs are read into the page cache (cat > /dev/null) before every timed phase; restores are timed without the final flush."
echo "CPU = user+sys of all processes of the pipeline; peak RSS = max over the pipeline's processes (/usr/bin/time on bash -c)."
echo "Added/repo bytes = du -sb of the tool's output directory (delta for incrementals). Restores compared with cmp: lz4, zstd, partclone, qemu restore the original; restic, borg, platter restore the latest (changed) image."
echo "platter: $( [ "$PLATTER_OK" = 1 ] && "$PLATTER" --version 2> /dev/null || echo 'not available')"
echo
awk -v big="$BIG" -v tools="$(echo " $TOOLS " | sed "s/ changes / /")" -f "$HERE/report.awk" "$RES"
if has_tool changes; then
    if [ "$PLATTER_OK" = 1 ]; then
        RUNS=$RUNS DIR=$DIR PLATTER=$PLATTER "$HERE/change-sources.sh" || log "change-sources.sh FAILED"
    else
        echo; echo "change sources: no platter binary (FAILED)"
    fi
fi
