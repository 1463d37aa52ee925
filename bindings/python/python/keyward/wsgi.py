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

from keyward._http import Gate, Refusal, RequiredScope, required_scope
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
        self.gate = Gate(store, header, trusted_proxies, forwarded_header)
        # A scope every request needs, or a function of (method, path)
        # giving the one a request needs (None: none).
        self.required_scope = required_scope

    @property
    def store(self) -> Store:
        return self.gate.store

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        def header(name: str) -> Optional[str]:
            return environ.get("HTTP_" + name.upper().replace("-", "_"))

        # The server joins repeated header lines with commas, in order.
        line = header(self.gate.forwarded)
        needed = required_scope(self.required_scope, environ.get("REQUEST_METHOD", "GET"),
                                environ.get("PATH_INFO", "/"))
        answer = self.gate.check(header, [line] if line else [], environ.get("REMOTE_ADDR"), needed)
        if isinstance(answer, Refusal):
            headers = answer.headers + [("Content-Length", str(len(answer.body)))]
            start_response(f"{answer.status} {answer.phrase}", headers)
            return [answer.body]
        environ[ENVIRON_KEY] = answer
        return self.app(environ, start_response)
