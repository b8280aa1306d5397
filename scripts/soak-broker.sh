#!/usr/bin/env bash
# The broker's soak test (issue #14), run for SECONDS of load (default 300: the few-minutes run; CI runs the
# same test for 15 s as part of the ordinary test suite). Many producers and consumers on several queues,
# consumers killed at random through a TCP proxy, one slow consumer holding the broker at its memory limit;
# then every queue is drained and checked: no accepted message lost, every redelivery marked
# (delivery-count, first-acquirer), memory within its limit plus the credit already given.
#
#   ./scripts/soak-broker.sh [SECONDS]
#
# It prints its seed; NUCLEON_SOAK_SEED=N in the environment reruns the same random choices.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
NUCLEON_SOAK_SECS=$secs exec cargo test --locked -p nucleon-integration-tests --test broker_soak --release \
    -- --nocapture
