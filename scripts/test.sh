#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs (Node and npm, Chromium, the
# centrifuge npm client from the lockfile, redis-server, promtool), then checks formatting and
# lints and runs every test.
#
#   bash scripts/test.sh
#
# The cargo target dir defaults to ~/.cache/hub/target (outside the clone) so repeated runs
# and CI reuse the build; set CARGO_TARGET_DIR to use another.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hub/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '\n== %s\n' "$*"; }

apt_updated=0
need_pkg() { # need_pkg COMMAND DEBIAN_PACKAGE...
  local cmd="$1"; shift
  if ! command -v "$cmd" >/dev/null 2>&1; then
    log "installing $* (for $cmd)"
    if [ "$apt_updated" = 0 ]; then
      apt-get update -qq
      apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

need_pkg node nodejs
need_pkg npm npm
need_pkg redis-server redis-server
need_pkg nginx nginx-light
need_pkg chromium chromium
need_pkg promtool prometheus

log "npm clients for the acceptance tests and examples (from their package-lock.json)"
for dir in tests/js examples/node-subscriber examples/browser; do
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
done

bash scripts/congodb.sh >/dev/null # CongoDB: the MongoDB-wire server social-app/store's Mongo tests use

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "fuzz: a short run of each target (cargo fuzz / libFuzzer; FUZZ_SECONDS each, default 20)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
# cargo fuzz needs unstable compiler flags: RUSTC_BOOTSTRAP lets the stable toolchain take them.
for target in protocol_json protocol_protobuf websocket_frames; do
  out="$CARGO_TARGET_DIR/fuzz-$target.log"
  mkdir -p "$CARGO_TARGET_DIR"
  if ! (cd hub-core/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
        -max_total_time="${FUZZ_SECONDS:-20}" -rss_limit_mb=2048 -print_final_stats=1) >"$out" 2>&1; then
    tail -n 60 "$out"
    echo "fuzz target $target failed (full log: $out)"
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units)" "$out" | sed "s/^/  $target: /"
done

log "cargo test"
results="$CARGO_TARGET_DIR/test-results.log"
cargo test --workspace 2>&1 | tee "$results"

# One closing line over every test binary (cargo's last block is a crate's doc-tests, often
# empty, which would otherwise read as if nothing ran).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' "$results"
