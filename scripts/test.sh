#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what the tests need on a fresh Debian machine,
# then runs the formatter check, clippy with warnings denied, the whole workspace's tests and doctests, the
# docs with warnings denied, and a check with the oldest supported Rust (the MSRV).
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

step "cargo test (unit, integration and example tests)"
cargo test --workspace --locked --lib --bins --tests

step "cargo test --doc (the crates' docs and the README's Rust snippets)"
cargo test --workspace --locked --doc

# The libraries' docs (the published API and the examples' library); the example binaries' own module docs
# are not an API and are left out.
step "cargo doc (warnings denied: broken links, missing docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --lib

# The oldest Rust the crates promise (workspace rust-version), checked with the locked tree. rustup installs
# that toolchain once (minimal profile, about 70 MB); without rustup the step says so and is skipped.
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
step "MSRV: cargo +$msrv check"
if command -v rustup >/dev/null; then
    rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal
    cargo "+$msrv" check --workspace --locked
else
    echo "rustup is not installed: the MSRV check (Rust $msrv) is skipped"
fi

step "all checks passed"
