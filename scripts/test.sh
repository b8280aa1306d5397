#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what the tests need on a fresh Debian machine,
# then runs the formatter check, clippy with warnings denied, and the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
./scripts/install-test-deps.sh
./scripts/build-proton-examples.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "all checks passed"
