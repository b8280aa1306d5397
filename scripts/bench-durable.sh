#!/usr/bin/env bash
# Durable against in-memory broker throughput (issue #15), driven by Qpid Proton C's own `send` and `receive`
# examples: for each pair, the release `broker` runs once in memory and once with `--data-dir` (a fresh
# directory, `--sync` as given, default batch), alternating; each run sends MESSAGES messages into one queue,
# then receives them all. Prints each run's seconds and the durable/in-memory ratios of the pair.
#
#   scripts/bench-durable.sh [PAIRS (3)] [MESSAGES (200000)] [SYNC (batch)]
#
# Then recovery: RECOVER (default 1000000) messages are sent into a durable broker, which is killed with
# SIGKILL; the time from starting it again to its ready line (the journal read, every message decoded and
# queued) is printed, and a receive of all of them checks they are there. RECOVER=0 skips it.
#
# DATA_DIR_BASE (default: the system temp dir) puts the journals on another filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS="${1:-3}"
MESSAGES="${2:-200000}"
SYNC="${3:-batch}"
BASE="${DATA_DIR_BASE:-${TMPDIR:-/tmp}}"
RECOVER="${RECOVER:-1000000}"

scripts/build-proton-examples.sh >/dev/null
PROTON="${PROTON_EXAMPLES_DIR:-target/proton-examples}"
cargo build --release -q -p nucleon-examples --bin broker
BROKER=target/release/broker

work=$(mktemp -d "$BASE/nucleon-bench-durable.XXXXXX")
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }

# start ARGS...: starts the broker with ARGS, sets pid and port (waits for the ready line).
start() {
    RUST_LOG=warn "$BROKER" "$@" >"$work/out" 2>"$work/err" &
    pid=$!
    port=""
    for _ in $(seq 1 2000); do
        port=$(sed -n 's/^broker listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/out")
        [ -n "$port" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.005
    done
    cat "$work/err" >&2
    echo "the broker did not start" >&2
    exit 1
}

# run KIND: prints "SEND_SECONDS RECEIVE_SECONDS" for one broker run (KIND memory or durable).
run() {
    local args=(-a 127.0.0.1:0 -t 2)
    if [ "$1" = durable ]; then
        rm -rf "$work/data"
        args+=(--data-dir "$work/data" --sync "$SYNC")
    fi
    start "${args[@]}"
    local t0 t1 t2
    t0=$(now)
    "$PROTON/send" 127.0.0.1 "$port" q "$MESSAGES" >/dev/null
    t1=$(now)
    "$PROTON/receive" 127.0.0.1 "$port" q "$MESSAGES" >/dev/null
    t2=$(now)
    kill "$pid" && wait "$pid" 2>/dev/null || true
    pid=""
    awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%.3f %.3f\n", b - a, c - b }'
}

echo "machine: $(nproc) cores, $(uname -r); journals under $BASE ($(df -T "$BASE" | awk 'NR==2 {print $2}'))"
echo "$MESSAGES messages, Proton C send then receive, broker -t 2, durable with --sync $SYNC"
printf '%-5s %12s %12s %12s %12s %10s %10s\n' pair mem-send mem-recv dur-send dur-recv send-x recv-x
for i in $(seq 1 "$PAIRS"); do
    read -r ms mr <<<"$(run memory)"
    read -r ds dr <<<"$(run durable)"
    awk -v i="$i" -v ms="$ms" -v mr="$mr" -v ds="$ds" -v dr="$dr" \
        'BEGIN { printf "%-5s %12.2f %12.2f %12.2f %12.2f %10.2f %10.2f\n", i, ms, mr, ds, dr, ms / ds, mr / dr }'
done
echo "send-x, recv-x: durable throughput as a fraction of in-memory (1.00 = as fast; issue #15 asks >= 0.50)"

if [ "$RECOVER" -gt 0 ]; then
    rm -rf "$work/data"
    start -a 127.0.0.1:0 -t 2 --data-dir "$work/data" --sync "$SYNC"
    "$PROTON/send" 127.0.0.1 "$port" q "$RECOVER" >/dev/null
    kill -9 "$pid" && wait "$pid" 2>/dev/null || true
    echo "journal of $RECOVER messages: $(du -sh "$work/data" | cut -f1)"
    t0=$(now)
    start -a 127.0.0.1:0 -t 2 --data-dir "$work/data" --sync "$SYNC"
    t1=$(now)
    awk -v a="$t0" -v b="$t1" -v n="$RECOVER" 'BEGIN { printf "recovery of %d messages after SIGKILL: %.2f s to the ready line\n", n, b - a }'
    "$PROTON/receive" 127.0.0.1 "$port" q "$RECOVER" >/dev/null
    echo "all $RECOVER received after the restart"
fi
