"""The ASGI middleware, driven directly."""

import asyncio
import json

from keyward.asgi import KeyAuthMiddleware


async def app(scope, receive, send):
    verdict = scope["keyward.verdict"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": verdict.key_id.encode()})


def call(middleware, headers, client=("127.0.0.1", 5000), scope_type="http"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": scope_type, "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": client}
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_allowed_refused_and_missing(store):
    c = store.create_key("asgi")
    mw = KeyAuthMiddleware(app, store)
    sent = call(mw, {"X-API-Key": c.key, "User-Agent": "n8n"})
    assert sent[0]["status"] == 200 and sent[1]["body"] == c.info.id.encode()
    sent = call(mw, {"Authorization": f"Bearer {c.key}"})
    assert sent[0]["status"] == 200

    sent = call(mw, {"X-API-Key": "kw_nope"})
    assert sent[0]["status"] == 401 and json.loads(sent[1]["body"])["reason"] == "malformed"
    sent = call(mw, {})
    assert sent[0]["status"] == 401 and json.loads(sent[1]["body"])["reason"] == "missing_key"

    store.add_whitelist_entry(c.info.id, "office", "198.51.100.0/24")
    store.set_whitelist_enabled(c.info.id, True)
    sent = call(mw, {"X-API-Key": c.key})
    assert sent[0]["status"] == 403 and json.loads(sent[1]["body"])["reason"] == "ip_not_allowed"
    sent = call(KeyAuthMiddleware(app, store, trusted_proxies=["127.0.0.1"]),
                {"X-API-Key": c.key, "X-Forwarded-For": "198.51.100.8"})
    assert sent[0]["status"] == 200
    assert store.usage(c.info.id).integrations[0].name == "n8n"


def test_lifespan_passes_through_and_websockets_are_checked(store):
    events = []

    async def inner(scope, receive, send):
        events.append(scope["type"])

    mw = KeyAuthMiddleware(inner, store)
    call(mw, {}, scope_type="lifespan")
    sent = call(mw, {}, scope_type="websocket")
    assert events == ["lifespan"]
    assert sent == [{"type": "websocket.close", "code": 1008}]
