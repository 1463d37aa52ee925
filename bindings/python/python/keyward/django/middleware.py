"""``KeyAuthMiddleware``: every Django view needs a valid key, but those
marked ``keyward_exempt`` (see :func:`exempt`) and DRF views (they
authenticate with ``KeywardKeyAuthentication``). The verdict is
``request.keyward_verdict``; a view's ``required_scope`` is checked."""

from __future__ import annotations

from typing import Any, Callable, Optional

from django.http import HttpRequest, HttpResponse

from keyward._http import Refusal
from keyward.django.request import check, required_scope, response


def exempt(view: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a view that needs no key (a health check, a login page)."""
    view.keyward_exempt = True  # type: ignore[attr-defined]
    return view


class KeyAuthMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> Optional[HttpResponse]:
        if getattr(view, "keyward_exempt", False) or hasattr(getattr(view, "cls", None), "authentication_classes"):
            return None
        answer = check(request, required_scope(view))
        if isinstance(answer, Refusal):
            return response(answer)
        request.keyward_verdict = answer  # type: ignore[attr-defined]
        return None
