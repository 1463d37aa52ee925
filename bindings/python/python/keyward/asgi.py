"""ASGI middleware: every HTTP request must carry a valid API key.

::

    from keyward.asgi import KeyAuthMiddleware
    app = KeyAuthMiddleware(app, store, header="X-API-Key", trusted_proxies=["10.0.0.0/8"])

Same rules as :mod:`keyward.wsgi`; the verdict is in
``scope["keyward.verdict"]``. Non-HTTP scopes (lifespan) pass through;
websocket connections are checked too and closed with code 1008 when refused.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Iterable, List, Tuple

from keyward._http import Gate, Refusal, RequiredScope, required_scope
from keyward._store import Store

SCOPE_KEY = "keyward.verdict"

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]


class KeyAuthMiddleware:
    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        store: Store,
        header: str = "X-API-Key",
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = "X-Forwarded-For",
        required_scope: RequiredScope = None,
    ) -> None:
        self.app = app
        self.gate = Gate(store, header, trusted_proxies, forwarded_header)
        # A scope every request needs, or a function of (method, path)
        # giving the one a request needs (None: none).
        self.required_scope = required_scope

    @property
    def store(self) -> Store:
        return self.gate.store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers, forwarded = asgi_headers(scope, self.gate.forwarded)
        client = scope.get("client")
        needed = required_scope(self.required_scope, scope.get("method", "GET"), scope.get("path", "/"))
        answer = self.gate.check(headers.get, forwarded, client[0] if client else None, needed)
        if not isinstance(answer, Refusal):
            await self.app({**scope, SCOPE_KEY: answer}, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response_headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in answer.headers]
        response_headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": answer.body})


def asgi_headers(scope: Scope, forwarded_header: str) -> Tuple[Dict[str, str], List[str]]:
    """An ASGI scope's headers by lower-case name (the first of repeated
    ones), and every line of the forwarding header, in arrival order (a
    proxy may append its own)."""
    headers: Dict[str, str] = {}
    forwarded: List[str] = []
    for raw, value in scope.get("headers", []):
        name = raw.decode("latin-1").lower()
        text = value.decode("latin-1")
        if name == forwarded_header:
            forwarded.append(text)
        headers.setdefault(name, text)
    return headers, forwarded
