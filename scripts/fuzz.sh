#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 20):
# first the inputs kept in fuzz/regressions (crashes found before, now
# fixed), then new ones. libFuzzer with AddressSanitizer through cargo fuzz;
# RUSTC_BOOTSTRAP lets the stable toolchain take its flags. Targets that
# build without the plugin host (the manifest target with the manifest
# parser alone), so the sanitizer build stays small.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

run() {
    local target="$1"
    shift
    if [ -d "fuzz/regressions/$target" ]; then
        cargo fuzz run "$@" "$target" fuzz/regressions/"$target"/* -- -runs=0
    fi
    # A corpus of its own per run, seeded from fuzz/seeds when there are some.
    local corpus
    corpus=$(mktemp -d)
    if [ -d "fuzz/seeds/$target" ]; then cp fuzz/seeds/"$target"/* "$corpus"/; fi
    cargo fuzz run "$@" "$target" "$corpus" -- -max_total_time="$seconds" -rss_limit_mb=4096
    rm -rf "$corpus"
}

for target in key network time c_json verify manifest; do
    run "$target"
done
run manifest
echo "fuzzed every target for ${seconds} s"
