#!/usr/bin/env bash
# Runs every test keyward has, after installing what the tests need.
# Usage: bash scripts/test-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# --- set-up -----------------------------------------------------------------
# The Rust toolchain (cargo, rustc) is the only prerequisite today; the
# C, Python and plugin suites add their installs here as they land.
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

# --- Rust: unit, integration and doc tests ------------------------------------
cargo test --lib --bins --tests --examples

# --- The README's tour must keep working ---------------------------------------
cargo run --quiet --example tour > /dev/null
echo "tour: ok"

cargo test --doc
