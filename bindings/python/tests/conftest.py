import json
import os
import pathlib
import subprocess

import pytest

import keyward

CHEAP = {"memory_kib": 64, "iterations": 1, "parallelism": 1}
REPO = pathlib.Path(__file__).resolve().parents[3]
# Where cargo puts what it builds (the test script shares one directory).
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def store(store_path):
    with keyward.Store(store_path, argon2=CHEAP) as s:
        yield s


@pytest.fixture(scope="session")
def store_tool():
    """The Rust API as a command: `store_tool STORE create NAME | verify KEY IP`."""
    subprocess.run(
        ["cargo", "build", "--quiet", "--example", "store_tool"], cwd=REPO, check=True
    )
    exe = TARGET / "debug" / "examples" / "store_tool"
    assert exe.exists()

    def run(*args):
        out = subprocess.run([str(exe), *args], capture_output=True, text=True, check=True)
        return out.stdout

    return run


@pytest.fixture(scope="session")
def cli():
    subprocess.run(["cargo", "build", "--quiet", "--bin", "keyward"], cwd=REPO, check=True)
    exe = TARGET / "debug" / "keyward"
    assert exe.exists()

    def run(path, *args):
        out = subprocess.run([str(exe), "--db", path, "--json", *args],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    return run
