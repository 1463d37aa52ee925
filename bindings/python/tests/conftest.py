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


def program(variable, cargo_args, built):
    """A program the tests drive: the path in ``variable`` when it is set
    (the test script sets them, for a run from the wheel without cargo),
    else built here with ``cargo build cargo_args`` into ``built``."""
    given = os.environ.get(variable)
    if given:
        return given
    subprocess.run(["cargo", "build", "--quiet", *cargo_args], cwd=REPO, check=True)
    exe = TARGET / "debug" / built
    assert exe.exists(), exe
    return str(exe)


@pytest.fixture(scope="session")
def store_tool():
    """The Rust API as a command: `store_tool STORE create NAME | verify KEY IP`."""
    exe = program("KEYWARD_STORE_TOOL", ["--example", "store_tool"], "examples/store_tool")

    def run(*args):
        out = subprocess.run([exe, *args], capture_output=True, text=True, check=True)
        return out.stdout

    return run


def keyward_bin():
    """The ``keyward`` CLI: ``$KEYWARD_BIN``, else built by cargo."""
    return program("KEYWARD_BIN", ["-p", "keyward-cli", "--bin", "keyward"], "keyward")


@pytest.fixture(scope="session")
def cli():
    exe = keyward_bin()

    def run(path, *args):
        out = subprocess.run([exe, "--db", path, "--json", *args],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    return run
