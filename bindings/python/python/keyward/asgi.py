"""ASGI middleware: every HTTP request must carry a valid API key.

::

    from keyward.asgi import KeyAuthMiddleware
    app = KeyAuthMiddleware(app, store, header="X-API-Key", trusted_proxies=["10.0.0.0/8"])

Same rules as :mod:`keyward.wsgi`; the verdict is in
``scope["keyward.verdict"]``. Non-HTTP scopes (lifespan) pass through;
websocket connections are checked too and closed with code 1008 when refused.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional

from keyward._http import (
    client_ip,
    denial_response,
    forwarded_hops,
    header_name,
    parse_proxies,
    presented_key,
    retry_after,
    RequiredScope,
    required_scope,
)
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
        self.store = store
        # A scope every request needs, or a function of (method, path)
        # giving the one a request needs (None: none).
        self.required_scope = required_scope
        self.header = header.lower().encode("latin-1")
        self.proxies = parse_proxies(trusted_proxies)
        self.forwarded = header_name(forwarded_header)
        self.forwarded_bytes = self.forwarded.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: Dict[bytes, str] = {}
        forwarded: List[str] = []
        for name, value in scope.get("headers", []):
            name = name.lower()
            if name == self.forwarded_bytes:
                # Every line, in arrival order: a proxy may append its own.
                forwarded.append(value.decode("latin-1"))
            headers.setdefault(name, value.decode("latin-1"))
        client = scope.get("client")
        peer: Optional[str] = client[0] if client else None
        ip = client_ip(peer, forwarded_hops(forwarded, self.forwarded), self.proxies)
        key = presented_key(headers.get(self.header), headers.get(b"authorization"))
        verdict = None
        reason = "missing_key" if key is None else "unknown_client"
        if key is not None and ip is not None:
            needed = required_scope(self.required_scope, scope.get("method", "GET"), scope.get("path", "/"))
            agent = headers.get(b"user-agent")
            verdict = (self.store.verify(key, ip, agent, scope=needed) if needed is not None
                       else self.store.verify(key, ip, agent))
        if verdict:
            await self.app({**scope, SCOPE_KEY: verdict}, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        status, body = denial_response(verdict, reason)
        response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            response_headers.append((b"www-authenticate", b'Bearer realm="api"'))
        wait = retry_after(verdict)
        if wait is not None:
            response_headers.append((b"retry-after", wait.encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
