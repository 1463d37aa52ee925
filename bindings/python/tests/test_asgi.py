"""The ASGI middleware, driven directly."""

import asyncio
import json

from keyward import Denial, Verdict
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


def call_lines(middleware, lines, client=("127.0.0.1", 5000)):
    """A request with header lines as given (names may repeat), in order."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in lines], "client": client}
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_a_forged_first_forwarded_line_does_not_walk_past_the_whitelist(store):
    c = store.create_key("k", whitelist=[("office", "198.51.100.0/24")])
    mw = KeyAuthMiddleware(app, store, trusted_proxies=["127.0.0.1"])
    # The client forges a whitelisted hop; the proxy appends the real one
    # on a line of its own.
    sent = call_lines(mw, [("X-API-Key", c.key), ("X-Forwarded-For", "198.51.100.8"),
                           ("X-Forwarded-For", "203.0.113.9")])
    assert sent[0]["status"] == 403
    sent = call_lines(mw, [("X-API-Key", c.key), ("X-Forwarded-For", "203.0.113.9"),
                           ("X-Forwarded-For", "198.51.100.8")])
    assert sent[0]["status"] == 200


def test_hops_that_are_not_addresses_are_refused_and_ports_are_dropped(store):
    c = store.create_key("k")
    mw = KeyAuthMiddleware(app, store, trusted_proxies=["127.0.0.1"])
    for hop in ("unknown", "_hidden", "not an address", "1.2.3.4:notaport", "[zz]:1"):
        sent = call_lines(mw, [("X-API-Key", c.key), ("X-Forwarded-For", hop)])
        assert sent[0]["status"] == 401, hop
        assert json.loads(sent[1]["body"])["reason"] == "unknown_client", hop
    for hop, seen in (("203.0.113.9:5678", "203.0.113.9"), ("[2001:db8::1]:443", "2001:db8::1"),
                      ("2001:db8::2", "2001:db8::2"), ("::ffff:203.0.113.10", "203.0.113.10")):
        sent = call_lines(mw, [("X-API-Key", c.key), ("X-Forwarded-For", hop)])
        assert sent[0]["status"] == 200, hop
        assert seen in [ip.ip for ip in store.usage(c.info.id).ips], hop


def test_rfc_7239_forwarded_when_configured(store):
    c = store.create_key("k", whitelist=[("v6 office", "2001:db8:cafe::/48")])
    mw = KeyAuthMiddleware(app, store, trusted_proxies=["127.0.0.1", "192.0.2.0/24"],
                           forwarded_header="Forwarded")
    lines = [("X-API-Key", c.key),
             ("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https, for=192.0.2.43')]
    assert call_lines(mw, lines)[0]["status"] == 200
    # X-Forwarded-For is not read when the proxies set Forwarded.
    lines = [("X-API-Key", c.key), ("X-Forwarded-For", "2001:db8:cafe::17"), ("Forwarded", "for=203.0.113.1")]
    assert call_lines(mw, lines)[0]["status"] == 403
    lines = [("X-API-Key", c.key), ("Forwarded", "for=unknown")]
    sent = call_lines(mw, lines)
    assert sent[0]["status"] == 401 and json.loads(sent[1]["body"])["reason"] == "unknown_client"


class _Answers:
    """A store whose every verification gets one verdict."""

    def __init__(self, denial):
        self.denial = denial

    def verify(self, key, ip, integration=None):
        return Verdict(False, self.denial, None, 0)


def test_busy_and_unavailable_are_503_with_retry_after():
    for denial, wait in ((Denial.UNAVAILABLE, b"5"), (Denial.BUSY, b"1")):
        sent = call(KeyAuthMiddleware(app, _Answers(denial)), {"X-API-Key": "kw_x"})
        assert sent[0]["status"] == 503
        headers = dict(sent[0]["headers"])
        assert headers[b"retry-after"] == wait and b"www-authenticate" not in headers
        assert json.loads(sent[1]["body"]) == {"error": "unavailable", "reason": denial.name.lower()}
    sent = call(KeyAuthMiddleware(app, _Answers(Denial.WRONG_SECRET)), {"X-API-Key": "kw_x"})
    assert sent[0]["status"] == 401 and b"retry-after" not in dict(sent[0]["headers"])
