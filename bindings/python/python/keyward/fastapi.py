"""FastAPI: a dependency that admits requests carrying a valid key.

::

    from fastapi import Depends, FastAPI
    from keyward.fastapi import KeyAuth, KeyRefused, refusal_handler

    app = FastAPI()
    app.add_exception_handler(KeyRefused, refusal_handler)   # the middleware's JSON
    orders = KeyAuth(store, scope="orders:read")

    @app.get("/orders")
    def list_orders(verdict=Depends(orders)):
        return {"customer": verdict.owner}

``KeyAuth`` is an API-key security scheme (the ``X-API-Key`` header) in
the OpenAPI document. It returns the verdict, or raises :class:`KeyRefused`
(an ``HTTPException``) with the status and headers the middleware answers
with (401 with ``WWW-Authenticate``, 403, 429 and 503 with
``Retry-After``); with ``refusal_handler`` installed the body is the
middleware's ``{"error": ..., "reason": ...}`` too (else FastAPI puts that
object under ``"detail"``).
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Optional, Union

from fastapi import HTTPException, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader

from keyward._http import Gate, Refusal
from keyward._store import Store, Verdict


class KeyRefused(HTTPException):
    """A refused key: the middleware's status and headers, its JSON as
    ``detail``."""

    def __init__(self, refused: Refusal) -> None:
        super().__init__(refused.status, json.loads(refused.body), dict(refused.extra_headers))
        self.refusal = refused


async def refusal_handler(request: Request, exc: Exception) -> Response:
    """Answers a :class:`KeyRefused` exactly as the middleware does."""
    refused = exc.refusal  # type: ignore[attr-defined]
    return Response(refused.body, status_code=refused.status, headers=dict(refused.headers),
                    media_type="application/json")


class KeyAuth(APIKeyHeader):
    def __init__(
        self,
        store: Union[Store, Callable[[], Store]],
        scope: Optional[str] = None,
        header: str = "X-API-Key",
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = "X-Forwarded-For",
        scheme_name: Optional[str] = None,
        description: Optional[str] = None,
    ) -> None:
        super().__init__(name=header, scheme_name=scheme_name or "keyward",
                         description=description or "An API key (also accepted as Authorization: Bearer).",
                         auto_error=False)
        self.gate = Gate(store, header, trusted_proxies, forwarded_header)
        self.scope = scope

    async def __call__(self, request: Request) -> Verdict:  # type: ignore[override]
        client = request.client
        answer = self.gate.check(request.headers.get, request.headers.getlist(self.gate.forwarded),
                                 client.host if client else None, self.scope)
        if isinstance(answer, Refusal):
            raise KeyRefused(answer)
        return answer
