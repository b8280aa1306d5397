#!/usr/bin/env bash
# Runs the runtime's tests (the `nucleon` crate's own and integration-tests/tests/runtime_*.rs) ROUNDS times
# in a row (default 20) while stress-ng keeps every core busy, and stops at the first failure. Races that a
# quiet machine hides show up here: each test binary runs its tests in parallel, on cores it must share.
#
#   ./scripts/stress-runtime.sh [ROUNDS]
#
# Needs stress-ng (`apt-get install -y stress-ng`). The test binaries are built once (the dev profile, as CI
# runs them) and then run directly, not through cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
command -v stress-ng >/dev/null || { echo "stress-ng is not installed (apt-get install -y stress-ng)" >&2; exit 2; }

mapfile -t binaries < <(
    cargo test --locked --no-run --message-format=json -p nucleon -p nucleon-integration-tests 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    if "/runtime#nucleon@" in m["package_id"] or m["target"]["name"].startswith("runtime_"):
        print(m["executable"])
'
)
# Run copies, so that a build in the same target directory meanwhile cannot swap a binary mid-run.
copies=$(mktemp -d)
for i in "${!binaries[@]}"; do
    cp "${binaries[$i]}" "$copies/"
    binaries[$i]="$copies/$(basename "${binaries[$i]}")"
done
echo "${#binaries[@]} test binaries"

stress-ng --cpu "$(nproc)" --timeout 0 --quiet &
load=$!
trap 'kill $load 2>/dev/null || true; rm -rf "$copies"' EXIT

for round in $(seq 1 "$rounds"); do
    for b in "${binaries[@]}"; do
        if ! out=$("$b" 2>&1); then
            echo "$out" | tail -40
            echo "round $round: FAILED in $(basename "$b")"
            exit 1
        fi
    done
    echo "round $round of $rounds: green"
done
echo "all $rounds rounds green under stress-ng --cpu $(nproc)"
