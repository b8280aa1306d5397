#!/usr/bin/env bash
# Instructions the broker executes per message, counted by valgrind's callgrind: Proton C's `receive`, then
# `send`, MESSAGES through one queue of `broker -t 2` (release). Unlike CPU time, the count hardly moves from
# run to run, so it shows what a change to the broker's per-message work does (cache misses and contention are
# not in it: measure those with scripts/bench-vs-proton.sh).
#
#   scripts/broker-instructions.sh [MESSAGES (40000)] [BROKER (the release build)]
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES="${1:-40000}"
command -v valgrind >/dev/null || { echo "broker-instructions: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
scripts/build-proton-examples.sh >/dev/null
PROTON="${PROTON_EXAMPLES_DIR:-target/proton-examples}"
if [ -n "${2:-}" ]; then
    BROKER="$2"
else
    cargo build --release -q -p nucleon-examples --bin broker
    BROKER="${CARGO_TARGET_DIR:-target}/release/broker"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/nucleon-broker-instructions.XXXXXX")
vpid=
cleanup() {
    [ -n "$vpid" ] && kill "$vpid" 2>/dev/null && wait "$vpid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$BROKER" -t 2 -a 127.0.0.1:0 \
    >"$work/broker.log" 2>&1 &
vpid=$!
port=
for _ in $(seq 600); do
    port=$(sed -n 's/^broker listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/broker.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "broker-instructions: the broker never became ready" >&2; exit 1; }
"$PROTON/receive" 127.0.0.1 "$port" q "$MESSAGES" >/dev/null &
rpid=$!
"$PROTON/send" 127.0.0.1 "$port" q "$MESSAGES" >/dev/null
wait "$rpid"
kill -INT "$vpid"
wait "$vpid" 2>/dev/null || true
vpid=
total=$(callgrind_annotate "$work/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
echo "broker: $BROKER"
echo "messages: $MESSAGES; instructions: $total; per message: $((total / MESSAGES))"
