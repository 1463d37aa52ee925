import http.server
import json
import os
import pathlib
import subprocess
import threading

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


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST as (path,
    headers, body) in ``received``; answers the statuses in ``answers`` in
    turn, then 200."""

    def __init__(self):
        self.received = []
        self.answers = []
        received, answers = self.received, self.answers

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, dict(self.headers.items()), body))
                self.send_response(answers.pop(0) if answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
