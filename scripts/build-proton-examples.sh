#!/usr/bin/env bash
# Build Qpid Proton's C examples `broker`, `send`, `receive` and `direct` into target/proton-examples/, for
# nucleon's Proton interop tests (integration-tests/tests/engine_interop.rs and interop_proton_c.rs).
#
# The sources come from Debian's libqpid-proton11-dev-examples package. Its Makefile and CMake files expect
# pkg-config/CMake modules that Debian does not ship, so each example is compiled directly:
#   gcc -O2 -o NAME NAME.c $(pkg-config --cflags --libs libqpid-proton) -lpthread
#
# Idempotent: an example is rebuilt only when its source (or a header shipped next to it) is newer than the
# binary, or when the Proton packages or compiler flags changed since the last build. The sources are copied into a scratch folder first, since the package's folder is read-only.
# Fails loudly when a needed package is missing: run scripts/install-test-deps.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES=(broker send receive direct)
OUT_DIR="${PROTON_EXAMPLES_DIR:-target/proton-examples}"

log() { echo "build-proton-examples: $*" >&2; }
die() {
    log "error: $*"
    log "run scripts/install-test-deps.sh to install Qpid Proton's packages"
    exit 1
}

command -v dpkg >/dev/null 2>&1 || die "dpkg not found; this script supports Debian/Ubuntu only"
for pkg in libqpid-proton11-dev libqpid-proton11-dev-examples pkg-config; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || die "package $pkg is not installed"
done
command -v gcc >/dev/null 2>&1 || die "gcc not found (install build-essential)"
pkg-config --exists libqpid-proton || die "pkg-config does not know libqpid-proton"

# Where the package put the C examples: the folder that holds broker.c.
BROKER_SRC=$(dpkg -L libqpid-proton11-dev-examples | grep -m1 '/examples/c/broker\.c$' || true)
SRC_DIR=${BROKER_SRC%/*}
[ -n "$BROKER_SRC" ] && [ -d "$SRC_DIR" ] || die "libqpid-proton11-dev-examples ships no examples/c/broker.c"

mkdir -p "$OUT_DIR/src"
# The headers the examples include with quotes (e.g. thread.h) live next to them.
shopt -s nullglob
HEADERS=("$SRC_DIR"/*.h)
shopt -u nullglob

read -r -a FLAGS <<<"$(pkg-config --cflags --libs libqpid-proton)"

# Everything the binaries depend on besides their sources: rebuild all when it changes (a package upgrade).
STAMP="$OUT_DIR/.build-stamp"
stamp=$(dpkg-query -W -f='${Package} ${Version}\n' libqpid-proton11-dev libqpid-proton11-dev-examples
        echo "gcc -O2 ${FLAGS[*]} -lpthread")
same_stamp=0
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp" ]; then
    same_stamp=1
fi

for name in "${EXAMPLES[@]}"; do
    src="$SRC_DIR/$name.c"
    bin="$OUT_DIR/$name"
    [ -f "$src" ] || die "missing example source $src"
    up_to_date=1
    if [ "$same_stamp" -eq 0 ] || [ ! -x "$bin" ]; then
        up_to_date=0
    else
        for dep in "$src" "${HEADERS[@]}"; do
            if [ "$dep" -nt "$bin" ]; then
                up_to_date=0
            fi
        done
    fi
    if [ "$up_to_date" -eq 1 ]; then
        log "$bin is up to date"
        continue
    fi
    cp -f "$src" "${HEADERS[@]}" "$OUT_DIR/src/"
    log "building $bin"
    # Build to a temporary name, then rename, so an interrupted build never leaves a broken binary behind.
    gcc -O2 -o "$bin.tmp" "$OUT_DIR/src/$name.c" "${FLAGS[@]}" -lpthread
    mv -f "$bin.tmp" "$bin"
done
printf '%s\n' "$stamp" >"$STAMP"
log "done: ${EXAMPLES[*]} in $OUT_DIR"
