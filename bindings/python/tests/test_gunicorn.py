"""The README's gunicorn example, run for real: four gunicorn workers open
one sled store after the fork (one owns it, three attach), serve requests
through the WSGI middleware, and refuse a key the CLI regenerates beside
them."""

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import REPO
from polling import eventually

EXAMPLE = REPO / "examples" / "python" / "gunicorn"


def _gunicorn_or_skip():
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("gunicorn is not installed (scripts/test-all.sh installs it)")
        pytest.skip("gunicorn is not installed")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, key):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            import json
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, ConnectionError):
        return None, None


def test_gunicorn_workers_share_one_store(tmp_path, cli):
    _gunicorn_or_skip()
    db = str(tmp_path / "keys.db")
    created = cli(db, "key", "create", "integration")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", "4",
         "-b", f"127.0.0.1:{port}", "app:app"],
        cwd=EXAMPLE, env={**os.environ, "KEYWARD_DB": db},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        eventually("gunicorn serves the key", lambda: _get(port, created["key"])[0] == 200)
        # Until a second worker (booted after the first, attached to its
        # store) has answered too: polled with the deadline, as workers
        # boot one after another and a busy machine may boot them slowly.
        workers, roles = set(), set()

        def two_workers_answered():
            status, body = _get(port, created["key"])
            assert status == 200
            workers.add(body["worker"])
            roles.add(body["role"])
            return len(workers) >= 2 and "attached" in roles

        eventually("a second, attached worker answers",
                   two_workers_answered)

        # The CLI attaches to the worker that owns the store.
        status = cli(db, "status")
        assert status["role"] == "attached" and status["owner_pid"] != server.pid

        fresh = cli(db, "key", "regenerate", created["id"], "--yes")["key"]

        def refused_everywhere():
            return all(_get(port, created["key"])[0] == 401 for _ in range(20))

        eventually("every worker refuses the old key", refused_everywhere)
        assert all(_get(port, fresh)[0] == 200 for _ in range(20))
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err.decode(errors="replace")[-2000:]
