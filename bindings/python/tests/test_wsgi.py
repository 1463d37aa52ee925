"""The WSGI middleware served by wsgiref on 127.0.0.1, called over real HTTP."""

import http.client
import json
import threading
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from keyward import Denial, Verdict
from keyward.wsgi import KeyAuthMiddleware


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def app(environ, start_response):
    verdict = environ["keyward.verdict"]
    body = json.dumps({"key_id": verdict.key_id, "generation": verdict.generation}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.fixture
def server(store):
    httpd = make_server("127.0.0.1", 0, KeyAuthMiddleware(app, store), handler_class=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


def get(url, headers):
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_allowed_bad_key_missing_key_and_refused_ip(store, server):
    c = store.create_key("web")
    status, body = get(server, {"X-API-Key": c.key, "User-Agent": "HubSpot/3.1"})
    assert status == 200 and body == {"key_id": c.info.id, "generation": 1}
    status, body = get(server, {"Authorization": f"Bearer {c.key}"})
    assert status == 200

    status, body = get(server, {"X-API-Key": c.key[:-1]})
    assert (status, body) == (401, {"error": "unauthorized", "reason": "malformed"})
    status, body = get(server, {})
    assert (status, body) == (401, {"error": "unauthorized", "reason": "missing_key"})

    store.add_whitelist_entry(c.info.id, "office", "198.51.100.0/24")
    store.set_whitelist_enabled(c.info.id, True)
    status, body = get(server, {"X-API-Key": c.key})
    assert (status, body) == (403, {"error": "forbidden", "reason": "ip_not_allowed"})

    usage = store.usage(c.info.id)
    assert "HubSpot/3.1" in [i.name for i in usage.integrations]
    assert usage.ips[0].ip == "127.0.0.1"


def test_forwarded_for_is_trusted_only_from_configured_proxies(store):
    c = store.create_key("proxied")
    store.add_whitelist_entry(c.info.id, "office", "198.51.100.0/24")
    store.set_whitelist_enabled(c.info.id, True)
    seen = []

    def start_response(status, headers):
        seen.append(status)

    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_API_KEY": c.key, "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    KeyAuthMiddleware(app, store)(dict(environ), start_response)
    KeyAuthMiddleware(app, store, trusted_proxies=["127.0.0.0/8"])(dict(environ), start_response)
    spoofed = dict(environ, REMOTE_ADDR="203.0.113.9")
    KeyAuthMiddleware(app, store, trusted_proxies=["127.0.0.0/8"])(spoofed, start_response)
    assert seen == ["403 Forbidden", "200 OK", "403 Forbidden"]


def _serve(middleware):
    httpd = make_server("127.0.0.1", 0, middleware, handler_class=QuietHandler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd


def _get_lines(port, lines):
    """GET / with header lines as given (names may repeat), over real HTTP."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", "/")
    for name, value in lines:
        conn.putheader(name, value)
    conn.endheaders()
    r = conn.getresponse()
    out = (r.status, json.loads(r.read()), dict(r.getheaders()))
    conn.close()
    return out


def test_repeated_forwarded_lines_are_joined_and_the_right_most_untrusted_hop_wins(store):
    c = store.create_key("k", whitelist=[("office", "198.51.100.0/24")])
    httpd = _serve(KeyAuthMiddleware(app, store, trusted_proxies=["127.0.0.1"]))
    try:
        port = httpd.server_port
        status, body, _ = _get_lines(port, [("X-API-Key", c.key), ("X-Forwarded-For", "198.51.100.8"),
                                            ("X-Forwarded-For", "203.0.113.9")])
        assert (status, body["reason"]) == (403, "ip_not_allowed")
        status, body, _ = _get_lines(port, [("X-API-Key", c.key), ("X-Forwarded-For", "unknown")])
        assert (status, body["reason"]) == (401, "unknown_client")
        status, _, _ = _get_lines(port, [("X-API-Key", c.key), ("X-Forwarded-For", "198.51.100.8:40000")])
        assert status == 200
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Unavailable:
    def verify(self, key, ip, integration=None):
        return Verdict(False, Denial.UNAVAILABLE, None, 0)


def test_an_unavailable_store_answers_503_with_retry_after():
    httpd = _serve(KeyAuthMiddleware(app, _Unavailable()))
    try:
        status, body, headers = _get_lines(httpd.server_port, [("X-API-Key", "kw_x")])
        assert (status, body) == (503, {"error": "unavailable", "reason": "unavailable"})
        assert headers["Retry-After"] == "5"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_rate_limited_and_out_of_quota_are_429_and_a_missing_scope_403(store):
    def needs(method, path):
        return "orders:write" if method == "POST" else "orders:read"

    httpd = make_server("127.0.0.1", 0, KeyAuthMiddleware(app, store, required_scope=needs),
                        handler_class=QuietHandler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}/orders"
    try:
        c = store.create_key("web", scopes=["orders:read"], limits=[("burst", 1, 3600)], quota=5)
        status, body = get(url, {"X-API-Key": c.key})
        assert status == 200
        req = urllib.request.Request(url, data=b"{}", headers={"X-API-Key": c.key}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403
        assert json.loads(refused.value.read()) == {"error": "forbidden", "reason": "scope_missing"}
        with pytest.raises(urllib.error.HTTPError) as limited:
            urllib.request.urlopen(urllib.request.Request(url, headers={"X-API-Key": c.key}), timeout=10)
        assert limited.value.code == 429
        assert json.loads(limited.value.read()) == {"error": "too_many_requests", "reason": "rate_limited"}
        assert 3590 <= int(limited.value.headers["Retry-After"]) <= 3717
        store.set_limits(c.info.id, [])
        store.set_quota(c.info.id, 0)
        status, body = get(url, {"X-API-Key": c.key})
        assert (status, body) == (429, {"error": "too_many_requests", "reason": "quota_exhausted"})
    finally:
        httpd.shutdown()
        httpd.server_close()
