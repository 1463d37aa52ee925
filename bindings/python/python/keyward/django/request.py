"""A Django request against the project's gate, and a refusal as a
Django response."""

from __future__ import annotations

from typing import Any, Optional, Union

from django.http import HttpResponse

from keyward._http import Refusal
from keyward._store import Verdict
from keyward.django.config import gate


def check(request: Any, scope: Optional[str]) -> Union[Verdict, Refusal]:
    """The verdict for ``request`` (a Django or DRF request), or the
    refusal to answer with."""
    g = gate()
    line = request.META.get("HTTP_" + g.forwarded.upper().replace("-", "_"))
    return g.check(request.headers.get, [line] if line else [], request.META.get("REMOTE_ADDR"), scope)


def response(refused: Refusal) -> HttpResponse:
    """The refusal as the WSGI middleware answers it."""
    answer = HttpResponse(refused.body, status=refused.status, content_type="application/json")
    for name, value in refused.extra_headers:
        answer[name] = value
    return answer


def required_scope(view: Any) -> Optional[str]:
    """The scope a view's requests must carry: its ``required_scope``, or
    its class's (a class-based view, a DRF view)."""
    for holder in (view, getattr(view, "view_class", None), getattr(view, "cls", None)):
        scope = getattr(holder, "required_scope", None)
        if scope is not None:
            return scope
    return None
