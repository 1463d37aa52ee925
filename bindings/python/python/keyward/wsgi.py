"""WSGI middleware: every request must carry a valid API key.

::

    from keyward.wsgi import KeyAuthMiddleware
    app = KeyAuthMiddleware(app, store, header="X-API-Key", trusted_proxies=["10.0.0.0/8"])

The key is read from ``header`` or ``Authorization: Bearer``; the client IP
is ``REMOTE_ADDR``, or, when that is one of ``trusted_proxies``, the
right-most hop of ``forwarded_header`` (``X-Forwarded-For``, or RFC 7239
``Forwarded``: whichever the proxies set) that is not a trusted proxy. A
hop that is not a plain address (``unknown``, an obfuscated identifier) is
refused as an unknown client; ``ip:port`` and ``[v6]:port`` count as their
address. The User-Agent is passed as the integration. Refused requests get
401 (403 for a refused IP; 503 with Retry-After when the store is busy or
unavailable) with a JSON reason; admitted ones reach the app with the
verdict in ``environ["keyward.verdict"]``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from keyward._http import (
    REASONS,
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

ENVIRON_KEY = "keyward.verdict"


class KeyAuthMiddleware:
    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
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
        self.environ_header = "HTTP_" + header.upper().replace("-", "_")
        self.proxies = parse_proxies(trusted_proxies)
        self.forwarded = header_name(forwarded_header)
        # The server joins repeated header lines with commas, in order.
        self.forwarded_environ = "HTTP_" + self.forwarded.upper().replace("-", "_")

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        key = presented_key(environ.get(self.environ_header), environ.get("HTTP_AUTHORIZATION"))
        line = environ.get(self.forwarded_environ)
        hops = forwarded_hops([line] if line else [], self.forwarded)
        ip: Optional[str] = client_ip(environ.get("REMOTE_ADDR"), hops, self.proxies)
        if key is None or ip is None:
            return self._refuse(start_response, None, "missing_key" if key is None else "unknown_client")
        needed = required_scope(self.required_scope, environ.get("REQUEST_METHOD", "GET"),
                                environ.get("PATH_INFO", "/"))
        agent = environ.get("HTTP_USER_AGENT")
        verdict = (self.store.verify(key, ip, agent, scope=needed) if needed is not None
                   else self.store.verify(key, ip, agent))
        if not verdict:
            return self._refuse(start_response, verdict, None)
        environ[ENVIRON_KEY] = verdict
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(start_response: Callable[..., Any], verdict: Any, reason: Optional[str]) -> Iterable[bytes]:
        status, body = denial_response(verdict, reason)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="api"'))
        wait = retry_after(verdict)
        if wait is not None:
            headers.append(("Retry-After", wait))
        start_response(f"{status} {REASONS[status]}", headers)
        return [body]
