"""keyward.fastapi with the real FastAPI and its test client: the verdict
in the endpoint, refusals with the middleware's statuses, headers and
(with refusal_handler) body, the scope, and the OpenAPI security scheme."""

import os

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
from fastapi import Depends, FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from keyward.fastapi import KeyAuth, KeyRefused, refusal_handler  # noqa: E402


def app_for(store, handler=True):
    app = FastAPI()
    if handler:
        app.add_exception_handler(KeyRefused, refusal_handler)
    orders = KeyAuth(store, scope="orders:read")
    anything = KeyAuth(store)

    @app.get("/orders")
    def list_orders(verdict=Depends(orders)):
        return {"owner": verdict.owner, "scopes": list(verdict.scopes)}

    @app.get("/anything")
    def anything_at_all(verdict=Depends(anything)):
        return {"key_id": verdict.key_id}

    return TestClient(app, client=("203.0.113.9", 5000))


def test_a_valid_key_reaches_the_endpoint_with_its_verdict(store):
    c = store.create_key("CRM", owner="acme", scopes=["orders:read"])
    client = app_for(store)
    r = client.get("/orders", headers={"X-API-Key": c.key})
    assert (r.status_code, r.json()) == (200, {"owner": "acme", "scopes": ["orders:read"]})
    r = client.get("/orders", headers={"Authorization": f"Bearer {c.key}"})
    assert r.status_code == 200


def test_refusals_answer_as_the_middleware_does(store):
    client = app_for(store)
    r = client.get("/anything")
    assert (r.status_code, r.json()) == (401, {"error": "unauthorized", "reason": "missing_key"})
    assert r.headers["www-authenticate"] == 'Bearer realm="api"'
    unscoped = store.create_key("plain")
    r = client.get("/orders", headers={"X-API-Key": unscoped.key})
    assert (r.status_code, r.json()) == (403, {"error": "forbidden", "reason": "scope_missing"})
    limited = store.create_key("burst", limits=[("burst", 1, 3600)])
    assert client.get("/anything", headers={"X-API-Key": limited.key}).status_code == 200
    r = client.get("/anything", headers={"X-API-Key": limited.key})
    assert (r.status_code, r.json()) == (429, {"error": "too_many_requests", "reason": "rate_limited"})
    assert int(r.headers["retry-after"]) > 3000
    fenced = store.create_key("office", whitelist=[("office", "198.51.100.0/24")])
    r = client.get("/anything", headers={"X-API-Key": fenced.key})
    assert (r.status_code, r.json()) == (403, {"error": "forbidden", "reason": "ip_not_allowed"})
    # Without the handler: the same status and headers, the body under "detail".
    r = app_for(store, handler=False).get("/anything")
    assert (r.status_code, r.json()) == (401, {"detail": {"error": "unauthorized", "reason": "missing_key"}})
    assert r.headers["www-authenticate"] == 'Bearer realm="api"'


def test_the_openapi_document_names_an_api_key_security_scheme(store):
    doc = app_for(store).get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["keyward"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "An API key (also accepted as Authorization: Bearer)."}
    assert doc["paths"]["/orders"]["get"]["security"] == [{"keyward": []}]
