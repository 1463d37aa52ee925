#!/usr/bin/env bash
# Runs every test keyward has, after installing what the tests need.
# Usage: bash scripts/test-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# --- set-up -----------------------------------------------------------------
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

# Debian packages the tests use: a C and C++ compiler (with AddressSanitizer),
# make and pkg-config for the C examples, Python 3 with venv, chromium
# with Node.js for the admin panel's browser tests, and FUSE 3 for the
# power-cut test (a file system that loses what was not synced).
apt_install() {
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    fi
}
missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v c++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v python3 >/dev/null || missing+=(python3)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
# The admin panel's browser tests: Debian's chromium, driven from Node.
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v fusermount3 >/dev/null || missing+=(fuse3 libfuse3-3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt_install "${missing[@]}"
fi

# --- PostgreSQL for the shared-store tests (unless KEYWARD_TEST_PG is given) --
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [ -z "${KEYWARD_TEST_PG:-}" ]; then
    if [ ! -d /usr/lib/postgresql ]; then
        apt_install postgresql
    fi
    pg_version=$(ls /usr/lib/postgresql | sort -n | tail -1)
    started_pg=""
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $4}' | grep -q online; then
        as_root pg_ctlcluster "$pg_version" main start
        started_pg=1
    fi
    me=$(id -un)
    as_root su postgres -c "psql -v ON_ERROR_STOP=1 -qAt" <<SQL
do \$\$ begin
    if not exists (select 1 from pg_roles where rolname = '$me') then
        execute format('create role %I superuser login', '$me');
    end if;
end \$\$;
drop database if exists keyward_test;
SQL
    as_root su postgres -c "createdb -O '$me' keyward_test"
    export KEYWARD_TEST_PG="postgresql:///keyward_test?host=/var/run/postgresql&user=$me"
    if [ "$(id -u)" = 0 ]; then
        export KEYWARD_TEST_PG_STOP="pg_ctlcluster $pg_version main stop -m immediate"
        export KEYWARD_TEST_PG_START="pg_ctlcluster $pg_version main start"
    else
        export KEYWARD_TEST_PG_STOP="sudo pg_ctlcluster $pg_version main stop -m immediate"
        export KEYWARD_TEST_PG_START="sudo pg_ctlcluster $pg_version main start"
    fi
    cleanup_pg() {
        as_root su postgres -c "dropdb --if-exists keyward_test" || true
        if [ -n "$started_pg" ]; then as_root pg_ctlcluster "$pg_version" main stop || true; fi
    }
    trap cleanup_pg EXIT
fi

# --- One build for everything ------------------------------------------------
# One target directory and one profile (dev: the tests run with
# `--profile dev`, not cargo's separate `test` profile) for every crate of
# the workspace, the installed C library and the Python wheel: the
# dependencies (wasmtime above all) are compiled once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$CARGO_TARGET_DIR"
pyenv="$CARGO_TARGET_DIR/pyenv"

# While cargo compiles: the shipped plugins (C, Python), which the plugin
# tests load, and a private venv with the Python package's build tools.
bash plugins/build.sh > "$CARGO_TARGET_DIR/plugins-build.log" 2>&1 &
plugins_job=$!
(
    python3 -m venv "$pyenv"
    "$pyenv/bin/pip" install --quiet --upgrade pip
    "$pyenv/bin/pip" install --quiet "maturin>=1.9,<2"
) > "$CARGO_TARGET_DIR/pyenv-setup.log" 2>&1 &
pyenv_job=$!
# playwright-core, pinned by the committed lockfile (it drives the system's
# chromium; it never downloads a browser).
(cd tests/browser && npm ci --no-audit --no-fund) > "$CARGO_TARGET_DIR/npm-setup.log" 2>&1 &
npm_job=$!

cargo build --workspace --lib --bins --tests --examples
# The tests drive this CLI (tests/common, bindings/python/tests/conftest.py).
export KEYWARD_BIN="$CARGO_TARGET_DIR/debug/keyward"
export KEYWARD_STORE_TOOL="$CARGO_TARGET_DIR/debug/examples/store_tool"

# The C library, installed as `make install` installs it (the dev build:
# PROFILE=dev), into a prefix of its own: the C tests (under ASan and
# UBSan) and the C examples build against it (KEYWARD_C_PREFIX).
c_prefix=$(mktemp -d)
make -s install PROFILE=dev PREFIX="$c_prefix"
export KEYWARD_C_PREFIX="$c_prefix"

wait "$plugins_job" || { cat "$CARGO_TARGET_DIR/plugins-build.log"; exit 1; }
wait "$npm_job" || { cat "$CARGO_TARGET_DIR/npm-setup.log"; exit 1; }
wait "$pyenv_job" || { cat "$CARGO_TARGET_DIR/pyenv-setup.log"; exit 1; }

# The Python wheel, built while the Rust tests run (they call no cargo),
# then installed into a fresh venv, without the build tools and nothing
# of Rust, where the Python tests run at the end.
wheels="$CARGO_TARGET_DIR/wheels"
wheelenv="$CARGO_TARGET_DIR/wheelenv"
(
    rm -rf "$wheels" "$wheelenv"
    PATH="$pyenv/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" \
        "$pyenv/bin/pip" wheel --no-build-isolation --no-deps ./bindings/python -w "$wheels"
    python3 -m venv "$wheelenv"
    # The frameworks the integrations are tested against, as users install them.
    "$wheelenv/bin/pip" install --quiet "$wheels"/keyward-*-cp310-abi3-*.whl pytest gunicorn mfusepy \
        "django>=5.2,<6" "djangorestframework>=3.16,<4" "djangorestframework-api-key>=3.1,<4" \
        "fastapi>=0.115" "httpx>=0.28" "flask>=3.1,<4" "prometheus_client>=0.21" \
        "standardwebhooks>=1.0"
) > "$CARGO_TARGET_DIR/wheel-build.log" 2>&1 &
wheel_job=$!

# --- Rust: unit, integration and doc tests of every crate ---------------------
cargo test --profile dev --workspace --lib --bins --tests --examples

# --- The README's tour must keep working ---------------------------------------
cargo run --quiet --example tour > /dev/null
echo "tour: ok"

# --- The scale example, small: on sled and on PostgreSQL (bulk built) ---------
scale_dir=$(mktemp -d)
sep='?'; [[ "$KEYWARD_TEST_PG" == *'?'* ]] && sep='&'
for db in "$scale_dir/store" "$KEYWARD_TEST_PG${sep}schema=scale_ci_$(date +%s)_$$"; do
    line=$(cargo run --quiet --features postgres --example scale -- --keys 3000 --sample 200 --rebuild --db "$db" | tail -n 1)
    echo "scale: $line"
    [[ "$line" =~ ^keys=3000\ open_ms=[0-9]+\ rss_bytes_per_key=[0-9]+\ index_bytes_per_key=[0-9]+\ disk_bytes_per_key=([0-9]+|n/a)\ verify_warm_ns=[0-9]+$ ]] \
        || { echo "scale: unexpected output for $db" >&2; exit 1; }
done
rm -rf "$scale_dir"

cargo test --profile dev --workspace --doc

# --- make uninstall removes exactly what make install placed ------------------
make -s uninstall PREFIX="$c_prefix"
left=$(find "$c_prefix" ! -type d)
[ -z "$left" ] || { echo "make uninstall left: $left" >&2; exit 1; }
rm -rf "$c_prefix"
echo "make install, uninstall: ok"

# --- The admin panel in a real browser (screenshots in target/panel-screenshots)
(cd tests/browser && KEYWARD_BIN="$CARGO_TARGET_DIR/debug/keyward" node --test panel.test.mjs)

# --- Python: the wheel, in a fresh venv, on a PATH without cargo or rustc -----
# (built above from the same target directory and profile as the tests; a
# user's `pip wheel ./bindings/python` builds a release wheel in isolation).
wait "$wheel_job" || { cat "$CARGO_TARGET_DIR/wheel-build.log"; exit 1; }
ls -l "$wheels"
no_rust_path="$wheelenv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
if PATH="$no_rust_path" command -v cargo rustc > /dev/null; then
    echo "cargo or rustc is on $no_rust_path: the wheel test must run without them" >&2
    exit 1
fi
(
    export PATH="$no_rust_path"
    python examples/python/app.py --self-test > /dev/null
    echo "python example: ok"
    cd bindings/python
    # The package from the wheel, not from the source tree beside the tests.
    python -c 'import keyward, sys; sys.exit("keyward" + " not from the wheel") if "/site-packages/" not in keyward.__file__ else None'
    python -m pytest -q -p no:cacheprovider
)

# --- Last, alone: the PostgreSQL server is stopped and restarted mid-run -----
cargo test --profile dev -p keyward-tests --test pg_server_kill -- --ignored --test-threads=1

# --- Fuzzing: every target, its kept crash inputs, then new ones ---------------
bash scripts/fuzz.sh "${KEYWARD_FUZZ_SECONDS:-20}"
