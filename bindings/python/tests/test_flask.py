"""keyward.flask with the real Flask and its test client."""

import os

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("flask")
from flask import Flask, g  # noqa: E402

import keyward  # noqa: E402
from keyward.flask import KeyAuth  # noqa: E402

from conftest import CHEAP  # noqa: E402


def app_for(**config):
    app = Flask(__name__)
    app.config.update(config)
    auth = KeyAuth(app)

    @app.get("/orders")
    @auth.key_required(scope="orders:read")
    def orders():
        return {"owner": g.keyward_verdict.owner}

    @app.get("/anything")
    @auth.key_required()
    def anything():
        return {"key_id": g.keyward_verdict.key_id}

    return app.test_client(), auth


def get(client, url, key=None, **environ):
    headers = {"X-API-Key": key} if key else {}
    return client.get(url, headers=headers, environ_base={"REMOTE_ADDR": "203.0.113.9", **environ})


def test_key_required_admits_and_refuses_as_the_middleware_does(tmp_path):
    db = str(tmp_path / "keys")
    client, auth = app_for(KEYWARD_DB=db, KEYWARD_OPTIONS={"argon2": CHEAP},
                           KEYWARD_TRUSTED_PROXIES=["127.0.0.1"])
    with client.application.app_context():
        store = auth.store()
        assert auth.store() is store  # opened once
    good = store.create_key("CRM", owner="acme", scopes=["orders:read"])
    r = get(client, "/orders", good.key)
    assert (r.status_code, r.get_json()) == (200, {"owner": "acme"})
    r = get(client, "/orders")
    assert (r.status_code, r.get_json()) == (401, {"error": "unauthorized", "reason": "missing_key"})
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert r.mimetype == "application/json"
    plain = store.create_key("plain")
    r = get(client, "/orders", plain.key)
    assert (r.status_code, r.get_json()) == (403, {"error": "forbidden", "reason": "scope_missing"})
    limited = store.create_key("burst", limits=[("burst", 1, 3600)])
    assert get(client, "/anything", limited.key).status_code == 200
    r = get(client, "/anything", limited.key)
    assert (r.status_code, r.get_json()["reason"]) == (429, "rate_limited")
    assert int(r.headers["Retry-After"]) > 3000
    fenced = store.create_key("office", whitelist=[("office", "198.51.100.0/24")])
    assert get(client, "/anything", fenced.key).status_code == 403
    r = client.get("/anything", headers={"X-API-Key": fenced.key, "X-Forwarded-For": "198.51.100.7"},
                   environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.status_code == 200
    store.close()


def test_a_given_store_is_used_as_it_is(store):
    app = Flask(__name__)
    auth = KeyAuth(app, store=store)

    @app.get("/")
    @auth.key_required()
    def index():
        return {"owner": g.keyward_verdict.owner}

    c = store.create_key("CRM", owner="acme")
    r = app.test_client().get("/", headers={"Authorization": f"Bearer {c.key}"})
    assert (r.status_code, r.get_json()) == (200, {"owner": "acme"})
    assert isinstance(auth.store(), keyward.Store)
