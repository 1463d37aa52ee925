"""The Django and FastAPI examples under examples/python/ run as their
READMEs say, against a store with a key in it."""

import json
import os
import subprocess
import sys

import pytest

import keyward

from conftest import CHEAP, REPO

EXAMPLES = REPO / "examples" / "python"


def _needs(*modules):
    if os.environ.get("CI") == "true":
        return
    for m in modules:
        pytest.importorskip(m)


@pytest.fixture
def keys(tmp_path):
    db = str(tmp_path / "keys")
    with keyward.Store(db, argon2=CHEAP) as s:
        reader = s.create_key("shop", owner="acme", scopes=["orders:read"])
        plain = s.create_key("plain", owner="acme")
    return db, reader.key, plain.key


def _run(args, cwd, db, code=""):
    env = {**os.environ, "KEYWARD_DB": db, "DJANGO_SECRET_KEY": "test"}
    return subprocess.run([sys.executable, *args] + ([code] if code else []), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_django_example_checks_clean_and_serves_a_key_holder(keys):
    _needs("django", "rest_framework")
    db, reader, plain = keys
    checked = _run(["manage.py", "check"], EXAMPLES / "django", db)
    assert checked.returncode == 0, checked.stderr
    assert "no issues" in checked.stdout
    script = f"""
import json
from django.test import Client
c = Client(REMOTE_ADDR="203.0.113.9")
for key in ({reader!r}, {plain!r}, None):
    r = c.get("/orders", **({{"HTTP_X_API_KEY": key}} if key else {{}}))
    print(json.dumps([r.status_code, json.loads(r.content)]))
"""
    ran = _run(["manage.py", "shell", "-c"], EXAMPLES / "django", db, script)
    assert ran.returncode == 0, ran.stderr
    answers = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("[")]
    assert answers[0][0] == 200 and answers[0][1]["customer"] == "acme"
    assert answers[1] == [403, {"error": "forbidden", "reason": "scope_missing"}]
    assert answers[2] == [401, {"error": "unauthorized", "reason": "missing_key"}]


def test_the_fastapi_example_serves_a_key_holder_and_documents_the_scheme(keys):
    _needs("fastapi", "httpx")
    db, reader, plain = keys
    script = f"""
import json, sys
sys.path.insert(0, ".")
from fastapi.testclient import TestClient
from app import app
c = TestClient(app, client=("203.0.113.9", 5000))
for key in ({reader!r}, {plain!r}):
    r = c.get("/orders", headers={{"X-API-Key": key}})
    print(json.dumps([r.status_code, r.json()]))
print(json.dumps(sorted(c.get("/openapi.json").json()["components"]["securitySchemes"])))
"""
    ran = _run(["-c"], EXAMPLES / "fastapi", db, script)
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("[")]
    assert lines[0] == [200, {"customer": "acme", "orders": []}]
    assert lines[1] == [403, {"error": "forbidden", "reason": "scope_missing"}]
    assert lines[2] == ["keyward"]


def test_the_django_benchmark_runs(tmp_path):
    _needs("django", "rest_framework", "rest_framework_api_key")
    bench = REPO / "bindings" / "python" / "bench_django.py"
    ran = subprocess.run([sys.executable, str(bench), "--requests", "20"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    names = [line.split("  ")[0] for line in ran.stdout.splitlines()]
    assert names == ["keyward", "drf-api-key 3.x (sha512)", "drf-api-key 2.x (PBKDF2)"], ran.stdout
