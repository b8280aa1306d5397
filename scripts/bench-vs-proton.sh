#!/usr/bin/env bash
# nucleon's broker against Qpid Proton C's example broker (issue #18), with Proton C's own `send` and `receive`
# as the clients of both, so the only thing that differs is the broker. For each pair both brokers run once
# per metric, alternating (odd pairs Proton C first, even pairs nucleon first), each run on a fresh broker
# and a fresh port. Prints every run, then one table of medians and ratios (nucleon / Proton C).
#
#   scripts/bench-vs-proton.sh [PAIRS (3)] [MESSAGES (200000)] [STORED (300000)] [IDLE (10000)]
#
# Metrics:
#   throughput   MESSAGES through one queue: `receive` started first, then `send`; seconds until both exit.
#   cpu/msg      the broker's user+sys CPU (/proc/PID/stat utime+stime) over that same run, per message.
#   mem/stored   fresh broker: VmRSS before and after `send` of STORED messages to a queue with no consumer,
#                per message (then drained with `receive`, not timed; DRAIN=0 skips it).
#   mem/idle     fresh broker: VmRSS before and after IDLE connections (SASL ANONYMOUS, open, then idle) from
#                scripts/idle-connections.py, per connection.
#   direct       MESSAGES from `send` straight into Proton C's `direct` against our `direct_recv`, at equal
#                credit: `direct` grants all the messages it expects at once, so `direct_recv --credit
#                MESSAGES`.
#   own clients  OWN (env, default 1000000) messages end to end through each broker with its own project's
#                clients, receiver started first: Proton C's `send`/`receive` through Proton C's broker, our
#                `simple_send`/`simple_recv --credit 1000` through ours; messages per second.
#
# Our broker: release build, `-t 2`, `-a 127.0.0.1:0` (the port from its ready line); for mem/idle with a
# config raising max_connections(_per_address) (default 10000 and 1000) and the idle timeout. Proton C's
# broker (4 threads, hard-coded) and `direct` listen on port 0 and print the port they got.
# Every process started is killed and reaped after its run, and on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS="${1:-3}"
MESSAGES="${2:-200000}"
STORED="${3:-300000}"
IDLE="${4:-10000}"
DRAIN="${DRAIN:-1}"
OWN="${OWN:-1000000}"
COMMAND="$0 $*"

scripts/build-proton-examples.sh >/dev/null
PROTON="${PROTON_EXAMPLES_DIR:-target/proton-examples}"
cargo build --release -q -p nucleon-examples --bin broker --bin direct_recv --bin simple_send --bin simple_recv
BIN="${CARGO_TARGET_DIR:-target}/release"
TICK=$(getconf CLK_TCK)

# The idle connections need a file descriptor each, in the client and in the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

work=$(mktemp -d "${TMPDIR:-/tmp}/nucleon-bench-vs-proton.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
# reap PID: waits for one process started by this script and forgets it (so the trap never signals a reused
# PID); stop PID kills it first.
reap() {
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}
stop() {
    kill "$1" 2>/dev/null || true
    reap "$1"
}
die() {
    echo "bench-vs-proton: $*" >&2
    exit 1
}

now() { date +%s.%N; }
rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }   # utime + stime; the name (field 2) has no spaces

# wait_port PID FILE SED: waits for the ready line in FILE and sets `port`.
wait_port() {
    port=""
    for _ in $(seq 1 2000); do
        port=$(sed -n "$3" "$2")
        [ -n "$port" ] && return 0
        kill -0 "$1" 2>/dev/null || break
        sleep 0.005
    done
    cat "$2" "$2.err" >&2 2>/dev/null || true
    die "the process writing $2 did not start"
}

# start_broker KIND [CONFIG]: starts a fresh broker (proton or nucleon), sets bpid and port.
start_broker() {
    if [ "$1" = proton ]; then
        "$PROTON/broker" 127.0.0.1 0 >"$work/broker.out" 2>"$work/broker.out.err" &
        bpid=$!
        pids+=("$bpid")
        wait_port "$bpid" "$work/broker.out" 's/^listening on \([0-9]*\)$/\1/p'
    else
        local config=()
        [ -n "${2:-}" ] && config=(--config "$2")
        RUST_LOG=warn "$BIN/broker" "${config[@]}" -a 127.0.0.1:0 -t 2 >"$work/broker.out" 2>"$work/broker.out.err" &
        bpid=$!
        pids+=("$bpid")
        wait_port "$bpid" "$work/broker.out" 's/^broker listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p'
    fi
}

# expect FILE TEXT WHAT: fails unless a client's output says it did all of it.
expect() {
    grep -qx "$2" "$1" || die "$3: expected '$2', got: $(tr '\n' ' ' <"$1" | head -c 300)"
}

# The measurements run in the main shell (never in $(...)), so `die` stops the script and the trap sees every
# PID; each sets its result variables.

# throughput KIND: sets thr (messages per second) and cpu (broker CPU microseconds per message).
throughput() {
    start_broker "$1"
    "$PROTON/receive" 127.0.0.1 "$port" q "$MESSAGES" >"$work/recv.out" 2>&1 &
    local rpid=$!
    pids+=("$rpid")
    sleep 0.3 # let the receiver attach; no message moves before `send` starts
    local c0 c1 t0 t1
    c0=$(cpu_ticks "$bpid")
    t0=$(now)
    "$PROTON/send" 127.0.0.1 "$port" q "$MESSAGES" >"$work/send.out" 2>&1 || true
    reap "$rpid"
    t1=$(now)
    c1=$(cpu_ticks "$bpid")
    stop "$bpid"
    expect "$work/send.out" "$MESSAGES messages sent and acknowledged" "$1 throughput send"
    expect "$work/recv.out" "$MESSAGES messages received" "$1 throughput receive"
    thr=$(awk -v a="$t0" -v b="$t1" -v n="$MESSAGES" 'BEGIN { printf "%.0f", n / (b - a) }')
    cpu=$(awk -v c0="$c0" -v c1="$c1" -v n="$MESSAGES" -v hz="$TICK" 'BEGIN { printf "%.3f", (c1 - c0) / hz * 1e6 / n }')
}

# stored KIND: sets mem (bytes of RSS per stored message).
stored() {
    start_broker "$1"
    local r0 r1
    r0=$(rss_bytes "$bpid")
    "$PROTON/send" 127.0.0.1 "$port" stored "$STORED" >"$work/send.out" 2>&1 || true
    r1=$(rss_bytes "$bpid")
    expect "$work/send.out" "$STORED messages sent and acknowledged" "$1 stored send"
    if [ "$DRAIN" != 0 ]; then
        "$PROTON/receive" 127.0.0.1 "$port" stored "$STORED" >"$work/recv.out" 2>&1 || true
        expect "$work/recv.out" "$STORED messages received" "$1 stored drain"
    fi
    stop "$bpid"
    mem=$(awk -v a="$r0" -v b="$r1" -v n="$STORED" 'BEGIN { printf "%.1f", (b - a) / n }')
}

# idle KIND: sets idl (bytes of RSS per idle connection), or "n/a" with the reason on stderr.
idle() {
    if [ "$FD_LIMIT" -lt $((IDLE + 64)) ]; then
        echo "bench-vs-proton: mem/idle not measured: the open-files limit is $FD_LIMIT, $IDLE connections need $((IDLE + 64))" >&2
        idl=n/a
        return
    fi
    start_broker "$1" "$work/idle.toml"
    local r0 r1 cpid
    r0=$(rss_bytes "$bpid")
    python3 scripts/idle-connections.py 127.0.0.1 "$port" "$IDLE" >"$work/idle.out" 2>&1 &
    cpid=$!
    pids+=("$cpid")
    while kill -0 "$cpid" 2>/dev/null && ! grep -q '^open ' "$work/idle.out"; do
        sleep 0.1
    done
    if ! grep -qx "open $IDLE" "$work/idle.out"; then
        echo "bench-vs-proton: mem/idle not measured on $1: $(head -c 300 "$work/idle.out")" >&2
        stop "$cpid"
        stop "$bpid"
        idl=n/a
        return
    fi
    sleep 1 # let the broker finish whatever the last opens started
    r1=$(rss_bytes "$bpid")
    stop "$cpid"
    stop "$bpid"
    idl=$(awk -v a="$r0" -v b="$r1" -v n="$IDLE" 'BEGIN { printf "%.0f", (b - a) / n }')
}

# direct KIND: sets dir (messages per second from `send` straight into the receiver).
direct() {
    local dpid
    if [ "$1" = proton ]; then
        "$PROTON/direct" 127.0.0.1 0 q "$MESSAGES" >"$work/direct.out" 2>&1 &
        dpid=$!
        pids+=("$dpid")
        wait_port "$dpid" "$work/direct.out" 's/^listening on \([0-9]*\)$/\1/p'
    else
        "$BIN/direct_recv" -a amqp://127.0.0.1:0/q -m "$MESSAGES" --credit "$MESSAGES" -q >"$work/direct.out" 2>&1 &
        dpid=$!
        pids+=("$dpid")
        wait_port "$dpid" "$work/direct.out" 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p'
    fi
    local t0 t1
    t0=$(now)
    "$PROTON/send" 127.0.0.1 "$port" q "$MESSAGES" >"$work/send.out" 2>&1 || true
    reap "$dpid"
    t1=$(now)
    expect "$work/send.out" "$MESSAGES messages sent and acknowledged" "$1 direct send"
    expect "$work/direct.out" "$MESSAGES messages received" "$1 direct receive"
    dir=$(awk -v a="$t0" -v b="$t1" -v n="$MESSAGES" 'BEGIN { printf "%.0f", n / (b - a) }')
}

# own KIND: sets own (messages per second end to end with the broker project's own clients).
own() {
    start_broker "$1"
    local rpid t0 t1
    if [ "$1" = proton ]; then
        "$PROTON/receive" 127.0.0.1 "$port" q "$OWN" >"$work/recv.out" 2>&1 &
    else
        "$BIN/simple_recv" -a "amqp://127.0.0.1:$port/q" -m "$OWN" --credit 1000 -q >"$work/recv.out" 2>&1 &
    fi
    rpid=$!
    pids+=("$rpid")
    sleep 0.3 # let the receiver attach; no message moves before the sender starts
    t0=$(now)
    if [ "$1" = proton ]; then
        "$PROTON/send" 127.0.0.1 "$port" q "$OWN" >"$work/send.out" 2>&1 || true
        expect "$work/send.out" "$OWN messages sent and acknowledged" "$1 own send"
    else
        "$BIN/simple_send" -a "amqp://127.0.0.1:$port/q" -m "$OWN" -q >"$work/send.out" 2>&1 || true
        expect "$work/send.out" "all messages confirmed" "$1 own send"
    fi
    reap "$rpid"
    t1=$(now)
    stop "$bpid"
    expect "$work/recv.out" "$OWN messages received" "$1 own receive"
    own=$(awk -v a="$t0" -v b="$t1" -v n="$OWN" 'BEGIN { printf "%.0f", n / (b - a) }')
}

cat >"$work/idle.toml" <<EOF
[limits]
max_connections = $((IDLE * 2))
max_connections_per_address = $((IDLE * 2))
idle_timeout_secs = 3600
EOF

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
echo "command: $COMMAND"
echo "clients: Proton C send/receive ($PROTON); brokers: Proton C broker (4 threads), nucleon broker -t 2 (release)"
printf '%-5s %-8s %12s %10s %12s %10s %12s %12s\n' pair broker 'thru msg/s' 'cpu us/msg' 'mem B/stored' 'mem B/idle' 'direct msg/s' 'own msg/s'
for i in $(seq 1 "$PAIRS"); do
    if [ $((i % 2)) -eq 1 ]; then order=(proton nucleon); else order=(nucleon proton); fi
    for kind in "${order[@]}"; do
        throughput "$kind"
        stored "$kind"
        idle "$kind"
        direct "$kind"
        own "$kind"
        printf '%-5s %-8s %12s %10s %12s %10s %12s %12s\n' "$i" "$kind" "$thr" "$cpu" "$mem" "$idl" "$dir" "$own"
        echo "$thr $cpu $mem $idl $dir $own" >>"$work/$kind"
    done
done

# median FILE COLUMN: the median of a column ("n/a" if any run could not measure it).
median() {
    awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '
        /n\/a/ { na = 1 } { v[NR] = $1 }
        END { if (na || NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "medians of $PAIRS pairs; ratio = nucleon / Proton C"
printf '%-34s %14s %14s %8s  %s\n' metric 'Proton C' nucleon ratio 'better'
row() { # NAME COLUMN higher|lower
    local p n
    p=$(median "$work/proton" "$2")
    n=$(median "$work/nucleon" "$2")
    awk -v name="$1" -v p="$p" -v n="$n" -v dir="$3" 'BEGIN {
        if (p == "n/a" || n == "n/a" || p + 0 <= 0) { printf "%-34s %14s %14s %8s  %s\n", name, p, n, "n/a", "not measured (see above)"; exit }
        r = n / p
        who = (dir == "higher") ? (r > 1 ? "nucleon" : "Proton C") : (r < 1 ? "nucleon" : "Proton C")
        if (r == 1) who = "neither"
        printf "%-34s %14s %14s %8.2f  %s is better (%s is better)\n", name, p, n, r, dir, who }'
}
row "throughput ($MESSAGES msgs, msg/s)" 1 higher
row "broker CPU per message (us)" 2 lower
row "RSS per stored message (bytes)" 3 lower
row "RSS per idle connection (bytes)" 4 lower
row "direct, equal credit (msg/s)" 5 higher
row "own clients, $OWN msgs (msg/s)" 6 higher
