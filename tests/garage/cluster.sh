#!/usr/bin/env bash
# A local 3-node Garage cluster on 127.0.0.1 for platter's S3 tests and bench.
#
#   cluster.sh start DIR              start 3 nodes, layout, key, bucket; write DIR/env
#   cluster.sh stop DIR               stop every node (SIGTERM, then SIGKILL after 2 s), wait
#   cluster.sh stop-node DIR N [--kill]   stop node N (1..3); --kill sends SIGKILL (a crash)
#   cluster.sh start-node DIR N       start node N again and wait until the cluster sees it
#   cluster.sh key DIR NAME [--read-only|--create-bucket]
#                                     create (or show) key NAME with access to the bucket
#                                     (read-only, or read/write and the right to create buckets
#                                     with S3 CreateBucket, which the main key lacks); prints
#                                     AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=...
#   cluster.sh bucket DIR NAME        create bucket NAME, read/write/owner for the main key
#   cluster.sh status DIR             garage's own view of the cluster
#
# Settings (environment):
#   GARAGE_BIN        the garage binary (default: `garage` on PATH, else ~/.cargo/bin/garage)
#   GARAGE_PORT_BASE  first port (default 29900). Node N uses BASE+10*(N-1)+{0: S3, 1: RPC,
#                     2: admin}, so a cluster takes BASE..BASE+22: two clusters need bases at
#                     least 30 apart. Keep it below Linux's range for outgoing connections'
#                     local ports (/proc/sys/net/ipv4/ip_local_port_range, 32768 up): a node
#                     restarted (start-node, start) on a port a client connection took while
#                     it was down cannot listen there.
#   GARAGE_BUCKET     the first bucket (default platter-test)
#   GARAGE_WATCH_PID  if set, a watcher stops the cluster when that process is gone (a test
#                     run that dies does not leave nodes behind)
#   GARAGE_WATCH_REMOVE  with 1, the watcher also removes DIR (the tests' clusters, which
#                     hold a few hundred MiB each)
#
# The fixed settings of every node (the bench and tests state them):
#   replication_factor = 3, consistency_mode = consistent (read and write quorum 2 of 3)
#   db_engine = lmdb (Garage's default and recommended engine, so the tests run what users run;
#     it is also the faster one: sqlite serialises writes behind one lock), lmdb_map_size = 1G
#     (address space, not disk: the default maps 1 TiB per node, which fails under ulimit -v)
#   metadata_fsync = false, data_fsync = false (tests and bench measure platter, not the disk;
#     a test cluster lives in a temp dir and dies with the test)
#   compression_level = none (platter's packs are compressed or encrypted already: zstd in
#     Garage would spend CPU for nothing on a 2-core machine)
#   block_size = 1M (Garage's default), s3_region = garage, path-style only (no root_domain)
#
# Node 1's S3 port is the endpoint written in DIR/env: stop node 2 or 3 to test a node
# failure (stopping node 1 takes the endpoint away: clients get "connection refused").
set -euo pipefail

die() { echo "cluster.sh: $*" >&2; exit 1; }

find_garage() {
    if [ -n "${GARAGE_BIN:-}" ]; then
        [ -x "$GARAGE_BIN" ] || die "GARAGE_BIN=$GARAGE_BIN is not an executable"
        echo "$GARAGE_BIN"; return
    fi
    if command -v garage >/dev/null 2>&1; then command -v garage; return; fi
    if [ -x "$HOME/.cargo/bin/garage" ]; then echo "$HOME/.cargo/bin/garage"; return; fi
    die "garage is not installed (not on PATH nor in ~/.cargo/bin).
Install it with:  cargo install --locked garage --version 2.5.0
(about 18 minutes on 2 cores; .ci/run does this when it is missing), or set GARAGE_BIN."
}

NODES=(1 2 3)
SPAWNED=()
PORT_BASE=${GARAGE_PORT_BASE:-29900}
REGION=garage

s3_port() { echo $((PORT_BASE + 10 * ($1 - 1))); }
rpc_port() { echo $((PORT_BASE + 10 * ($1 - 1) + 1)); }
admin_port() { echo $((PORT_BASE + 10 * ($1 - 1) + 2)); }

# Milliseconds since the epoch (bash 5).
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# The pid of node N if it runs (checked against /proc so a reused pid is never taken).
node_pid() {
    local f="$DIR/node$1/pid" pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/node$1/garage.toml" || return 1
    echo "$pid"
}

# Run the garage CLI against the first running node (or node $G_NODE).
g() {
    local n
    for n in ${G_NODE:-${NODES[@]}}; do
        if node_pid "$n" >/dev/null; then
            "$GARAGE" -c "$DIR/node$n/garage.toml" "$@"
            return
        fi
    done
    die "no node of the cluster in $DIR is running"
}

write_config() {
    local n=$1 peers=${2:-}
    mkdir -p "$DIR/node$n/meta" "$DIR/node$n/data"
    cat >"$DIR/node$n/garage.toml.tmp" <<EOF
# Garage node $n of the test cluster in $DIR (written by tests/garage/cluster.sh).
metadata_dir = "$DIR/node$n/meta"
data_dir = "$DIR/node$n/data"
db_engine = "lmdb"
lmdb_map_size = "1G"
metadata_fsync = false
data_fsync = false
compression_level = "none"
block_size = "1M"
replication_factor = 3
consistency_mode = "consistent"

rpc_secret = "$(cat "$DIR/rpc_secret")"
rpc_bind_addr = "127.0.0.1:$(rpc_port "$n")"
rpc_public_addr = "127.0.0.1:$(rpc_port "$n")"
bootstrap_peers = [$peers]

[s3_api]
api_bind_addr = "127.0.0.1:$(s3_port "$n")"
s3_region = "$REGION"

[admin]
api_bind_addr = "127.0.0.1:$(admin_port "$n")"
EOF
    mv "$DIR/node$n/garage.toml.tmp" "$DIR/node$n/garage.toml"
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

spawn_node() {
    local n=$1 pid
    if pid=$(node_pid "$n"); then return 0; fi
    # A start that fails stops the nodes it spawned, and only those (a test run must not leave
    # nodes behind; a failed start-node must not take the others down).
    trap 'rc=$?; [ $rc = 0 ] || [ ${#SPAWNED[@]} = 0 ] || {
        echo "cluster.sh: stopping the node(s) this command started: ${SPAWNED[*]}" >&2
        for s in "${SPAWNED[@]}"; do stop_pid "$s" TERM; done; }' EXIT
    local p
    for p in $(s3_port "$n") $(rpc_port "$n") $(admin_port "$n"); do
        tcp_open "$p" && die "port $p (node $n) is already in use: choose another GARAGE_PORT_BASE"
    done
    # setsid: the node does not share the caller's terminal or process group (Garage stops on
    # SIGHUP and SIGINT); GARAGE_WATCH_PID covers a caller that dies.
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-garage=warn,netapp=warn} setsid "$GARAGE" \
        -c "$DIR/node$n/garage.toml" server </dev/null >>"$DIR/node$n/log" 2>&1 &
    echo $! >"$DIR/node$n/pid"
    SPAWNED+=("$n")
}

# Wait until `what` (a command) succeeds, checking that the nodes we started still live.
wait_for() {
    local what=$1 limit=${2:-60} start
    start=$(now_ms)
    until eval "$what" >/dev/null 2>&1; do
        local n
        for n in "${WAIT_NODES[@]}"; do
            node_pid "$n" >/dev/null || die "node $n died; its log ($DIR/node$n/log) ends with:
$(tail -n 15 "$DIR/node$n/log" 2>/dev/null)"
        done
        if [ $(($(now_ms) - start)) -gt $((limit * 1000)) ]; then
            local logs=""
            for n in "${WAIT_NODES[@]}"; do
                logs+="
node $n's log ($DIR/node$n/log) ends with:
$(tail -n 15 "$DIR/node$n/log" 2>/dev/null)"
            done
            die "timed out after ${limit}s waiting for: $what$logs"
        fi
        sleep 0.1
    done
}

healthy() { g health 2>/dev/null | grep -q 'Cluster health:.*HEALTHY'; }
# Every running node counts every running node up (a restarted node is seen by the others
# only once they have connected back to it: until then they answer "Not connected").
all_up() {
    local n running=()
    for n in "${NODES[@]}"; do node_pid "$n" >/dev/null && running+=("$n"); done
    for n in "${running[@]}"; do
        G_NODE=$n g health 2>/dev/null |
            grep -Eq "Storage nodes up:[[:space:]]+${#running[@]}\$" || return 1
    done
}

rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# Key NAME: DIR/keys/NAME holds "ID SECRET". Imported with an id we choose, so no output of
# garage has to be parsed.
ensure_key() {
    local name=$1 id secret
    mkdir -p "$DIR/keys"
    if [ -f "$DIR/keys/$name" ]; then
        read -r id secret <"$DIR/keys/$name"
        g key info "$id" >/dev/null 2>&1 && return 0
    else
        id="GK$(rand_hex 12)"
        secret=$(rand_hex 32)
    fi
    g key import -n "$name" --yes "$id" "$secret" >/dev/null
    echo "$id $secret" >"$DIR/keys/$name"
}

key_id() { cut -d' ' -f1 "$DIR/keys/$1"; }
key_secret() { cut -d' ' -f2 "$DIR/keys/$1"; }

ensure_bucket() {
    local bucket=$1
    g bucket info "$bucket" >/dev/null 2>&1 || g bucket create "$bucket" >/dev/null
}

write_env() {
    cat >"$DIR/env.tmp" <<EOF
# Garage test cluster in $DIR: 3 nodes, replication 3, lmdb, fsync off, compression none.
export AWS_ACCESS_KEY_ID=$(key_id main) AWS_SECRET_ACCESS_KEY=$(key_secret main) AWS_REGION=$REGION PLATTER_S3_ENDPOINT=http://127.0.0.1:$(s3_port 1) PLATTER_S3_BUCKET=$(cat "$DIR/bucket")
EOF
    mv "$DIR/env.tmp" "$DIR/env"
}

start_watch() {
    [ -n "${GARAGE_WATCH_PID:-}" ] || return 0
    if [ -f "$DIR/watch.pid" ] && kill -0 "$(cat "$DIR/watch.pid")" 2>/dev/null; then return 0; fi
    local self
    self=$(readlink -f "$0")
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; rm -f "$3/watch.pid"; "$2" stop "$3"; if [ "$4" = 1 ]; then rm -rf "$3"; fi' \
        watch "$GARAGE_WATCH_PID" "$self" "$DIR" "${GARAGE_WATCH_REMOVE:-0}" </dev/null >>"$DIR/watch.log" 2>&1 &
    echo $! >"$DIR/watch.pid"
}

cmd_start() {
    local t0 n ms
    t0=$(now_ms)
    mkdir -p "$DIR"
    [ -f "$DIR/rpc_secret" ] || rand_hex 32 >"$DIR/rpc_secret"
    [ -f "$DIR/bucket" ] || echo "${GARAGE_BUCKET:-platter-test}" >"$DIR/bucket"
    for n in "${NODES[@]}"; do
        # A cluster that ran before keeps its config (and its bootstrap peers).
        [ -f "$DIR/node$n/garage.toml" ] || write_config "$n"
    done
    WAIT_NODES=("${NODES[@]}")
    for n in "${NODES[@]}"; do spawn_node "$n"; done
    # Each node writes its key pair first thing; the id is the public key.
    local ids=() peers=""
    for n in "${NODES[@]}"; do
        wait_for "[ -s '$DIR/node$n/meta/node_key.pub' ]" 30
        ids[n]=$("$GARAGE" -c "$DIR/node$n/garage.toml" node id -q 2>/dev/null)
        peers+="${peers:+, }\"${ids[n]}\""
    done
    if [ ! -f "$DIR/layout.done" ]; then
        for n in 2 3; do
            wait_for "G_NODE=1 g node connect '${ids[n]}'" 30
        done
        # Restarts find their peers from the config too, not only from the peer list.
        for n in "${NODES[@]}"; do write_config "$n" "$peers"; done
        for n in "${NODES[@]}"; do
            G_NODE=1 g layout assign -z "zone$n" -c 1G "${ids[n]%@*}" >/dev/null
        done
        G_NODE=1 g layout apply --version 1 >/dev/null
        touch "$DIR/layout.done"
    fi
    wait_for healthy 60
    # After a restart of every node, a node may wait 30 s and more before it
    # tries a lost peer again (seen under load in CI): tell each to connect
    # to the others now, as start-node does.
    local m
    for n in "${NODES[@]}"; do
        for m in "${NODES[@]}"; do
            [ "$m" != "$n" ] && G_NODE=$m g node connect "${ids[n]}" >/dev/null 2>&1 || true
        done
    done
    wait_for all_up 30
    ensure_key main
    local bucket
    bucket=$(cat "$DIR/bucket")
    ensure_bucket "$bucket"
    g bucket allow --read --write --owner --key "$(key_id main)" "$bucket" >/dev/null
    write_env
    start_watch
    # The S3 endpoint answers (any HTTP status: 403 without a signature).
    wait_for "tcp_open $(s3_port 1)" 10
    ms=$(($(now_ms) - t0))
    printf 'cluster.sh: 3 nodes up in %d.%03ds; S3 at http://127.0.0.1:%s, bucket %s; env in %s/env\n' \
        $((ms / 1000)) $((ms % 1000)) "$(s3_port 1)" "$bucket" "$DIR" >&2
}

stop_pid() {
    local n=$1 sig=$2 pid i
    pid=$(node_pid "$n") || { rm -f "$DIR/node$n/pid"; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    # Garage's own shutdown often waits 5-10 s for lost peers: give it 2 s, then SIGKILL.
    # Nothing is lost by that (lmdb and the data blocks live in the page cache; only a
    # machine crash could lose them, and fsync is off anyway).
    for i in $(seq 1 20); do
        node_pid "$n" >/dev/null || break
        sleep 0.1
    done
    if node_pid "$n" >/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        while node_pid "$n" >/dev/null; do sleep 0.05; done
    fi
    # The pid is not our child: wait for its S3 port to close so a restart can bind it.
    for i in $(seq 1 100); do tcp_open "$(s3_port "$n")" || break; sleep 0.05; done
    rm -f "$DIR/node$n/pid"
}

cmd_stop() {
    local n
    for n in "${NODES[@]}"; do
        if pid=$(node_pid "$n"); then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for n in "${NODES[@]}"; do stop_pid "$n" TERM; done
    if [ -f "$DIR/watch.pid" ]; then
        local w
        w=$(cat "$DIR/watch.pid")
        # Only our watcher: a bash whose command line names this cluster's folder.
        if [ "$w" != "$$" ] && [ "$w" != "$PPID" ] && [ -r "/proc/$w/cmdline" ] &&
            tr '\0' ' ' <"/proc/$w/cmdline" | grep -qF -- "$DIR"; then
            kill "$w" 2>/dev/null || true
        fi
        rm -f "$DIR/watch.pid"
    fi
}

check_node() {
    case "${1:-}" in 1 | 2 | 3) ;; *) die "node number must be 1, 2 or 3, not '${1:-}'" ;; esac
}

cmd_stop_node() {
    local n=$1 sig=TERM
    check_node "$n"
    [ "${2:-}" = "--kill" ] && sig=KILL
    stop_pid "$n" "$sig"
}

cmd_start_node() {
    local n=$1
    check_node "$n"
    [ -f "$DIR/node$n/garage.toml" ] || die "no cluster in $DIR (run: cluster.sh start $DIR)"
    WAIT_NODES=("$n")
    spawn_node "$n"
    wait_for "tcp_open $(s3_port "$n")" 30
    # The others retry a lost peer with a growing delay (30 s and more after a few minutes):
    # tell each running node to connect to the restarted one now.
    local id m
    id=$("$GARAGE" -c "$DIR/node$n/garage.toml" node id -q 2>/dev/null)
    for m in "${NODES[@]}"; do
        [ "$m" != "$n" ] && node_pid "$m" >/dev/null || continue
        G_NODE=$m g node connect "$id" >/dev/null 2>&1 || true
    done
    wait_for all_up 30
}

cmd_key() {
    local name=$1 ro=${2:-} bucket
    [ -f "$DIR/layout.done" ] || die "no cluster in $DIR (run: cluster.sh start $DIR)"
    case "$name" in */* | "" | .*) die "bad key name '$name'" ;; esac
    [ "$name" = main ] && [ -n "$ro" ] && die "the main key stays read/write (pick another name)"
    bucket=$(cat "$DIR/bucket")
    ensure_key "$name"
    if [ "$ro" = "--read-only" ]; then
        g bucket deny --write --owner --key "$(key_id "$name")" "$bucket" >/dev/null
        g bucket allow --read --key "$(key_id "$name")" "$bucket" >/dev/null
    elif [ -z "$ro" ] || [ "$ro" = "--create-bucket" ]; then
        g bucket allow --read --write --owner --key "$(key_id "$name")" "$bucket" >/dev/null
        [ -z "$ro" ] || g key allow --create-bucket "$(key_id "$name")" >/dev/null
    else
        die "unknown option '$ro' (--read-only or --create-bucket)"
    fi
    echo "AWS_ACCESS_KEY_ID=$(key_id "$name")"
    echo "AWS_SECRET_ACCESS_KEY=$(key_secret "$name")"
}

cmd_bucket() {
    local name=$1
    [ -f "$DIR/layout.done" ] || die "no cluster in $DIR (run: cluster.sh start $DIR)"
    ensure_bucket "$name"
    g bucket allow --read --write --owner --key "$(key_id main)" "$name" >/dev/null
    echo "$name"
}

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd=$1
DIR=$2
shift 2
mkdir -p "$DIR" 2>/dev/null || die "cannot create $DIR"
DIR=$(cd "$DIR" && pwd -P)
GARAGE=$(find_garage)
case "$cmd" in
start) cmd_start ;;
stop) cmd_stop ;;
stop-node) [ $# -ge 1 ] || usage; cmd_stop_node "$@" ;;
start-node) [ $# -ge 1 ] || usage; cmd_start_node "$1" ;;
key) [ $# -ge 1 ] || usage; cmd_key "$@" ;;
bucket) [ $# -ge 1 ] || usage; cmd_bucket "$1" ;;
status) g status ;;
*) usage ;;
esac
