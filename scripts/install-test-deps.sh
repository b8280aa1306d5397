#!/usr/bin/env bash
# Install what nucleon's tests need beyond Rust: the Qpid Proton C library + Python binding (interop tests
# in integration-tests/proton), Chromium + its driver and the npm packages of examples/tests/browser (the
# chat_relay browser test, examples/tests/chat_browser.rs; node and npm must be on PATH), and RabbitMQ for
# the interop tests (started privately by scripts/interop/rabbitmq.sh, never as a system service), and rhea for
# the rhea interop tests (integration-tests/peers/rhea, run by integration-tests/tests/interop_rhea.rs).
#
# Idempotent and non-interactive: safe to run repeatedly, in CI (CI=true, no
# stdin). Runs `apt-get update` only when a needed package is missing, and
# returns quickly when everything is already installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

REQUIRED_PKGS=(
    python3-qpid-proton
    libqpid-proton11-dev
    libqpid-proton11-dev-examples
    pkg-config
    chromium
    chromium-driver
    rabbitmq-server
)
# Installed only if the package exists in the configured apt sources.
OPTIONAL_PKGS=(
    amqp-specs
)

log() { echo "install-test-deps: $*" >&2; }

if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found; this script supports Debian/Ubuntu only"
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        log "not root and sudo is unavailable; cannot install packages"
        exit 1
    fi
fi

is_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [ "$status" = "install ok installed" ]
}

# A package is "available" if apt knows a candidate version for it.
is_available() {
    local cand
    cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
    [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

install_apt() {
    missing_required=()
    for p in "${REQUIRED_PKGS[@]}"; do
        is_installed "$p" || missing_required+=("$p")
    done
    missing_optional=()
    for p in "${OPTIONAL_PKGS[@]}"; do
        is_installed "$p" || missing_optional+=("$p")
    done

    if [ ${#missing_required[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
        log "all packages already installed"
        return 0
    fi

    updated=0
    apt_update() {
        if [ "$updated" -eq 0 ]; then
            log "running apt-get update"
            "${SUDO[@]}" apt-get update -qq </dev/null
            updated=1
        fi
    }

    to_install=("${missing_required[@]}")

    if [ ${#missing_required[@]} -gt 0 ]; then
        # Something required is missing: refresh the package lists once.
        apt_update
    fi

    # Optional packages: install only those the apt sources actually provide.
    # When every required package is already there, do not run `apt-get update`
    # just to look for an optional one (keeps repeated runs fast and offline).
    for p in "${missing_optional[@]}"; do
        if is_available "$p"; then
            to_install+=("$p")
        fi
    done

    if [ ${#to_install[@]} -eq 0 ]; then
        log "required packages installed; optional package(s) unavailable, skipped: ${missing_optional[*]}"
        return 0
    fi

    # Make sure the lists are fresh enough to install the missing packages.
    apt_update

    log "installing: ${to_install[*]}"
    # No package may start a system service (rabbitmq-server would listen on every interface): the tests
    # start their own, on loopback. A policy-rc.d that denies starts does that, for this install only.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod +x "$policy"
        own_policy=1
    fi
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${to_install[@]}" </dev/null
    if [ "$own_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$policy"
    fi

    for p in "${REQUIRED_PKGS[@]}"; do
        if ! is_installed "$p"; then
            log "failed to install $p"
            exit 1
        fi
    done
}

# npm packages pinned by a folder's package-lock.json: `npm ci` in DIR runs only when the installed version
# of PACKAGE is not the locked one, so repeated runs stay offline.
npm_ci_if_stale() {
    local dir="$1" package="$2" want have
    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        log "node and npm are needed for $dir; install Node.js 20 or newer"
        exit 1
    fi
    want=$(cd "$dir" && node -p "require('./package-lock.json').packages['node_modules/$package'].version")
    have=$(cd "$dir" && node -p "try { require('./node_modules/$package/package.json').version } catch { '' }")
    if [ "$want" = "$have" ]; then
        log "npm packages of $dir already installed"
        return 0
    fi
    log "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund </dev/null)
}

# The browser test's npm packages (examples/tests/browser) and the rhea interop peer's
# (integration-tests/peers/rhea).
install_npm() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    npm_ci_if_stale "$root/examples/tests/browser" playwright-core
    npm_ci_if_stale "$root/integration-tests/peers/rhea" rhea
}

install_apt
install_npm
log "done"
