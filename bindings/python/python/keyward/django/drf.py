"""Django REST framework: ``KeywardKeyAuthentication`` sets
``request.auth`` to the verdict (``request.auth.owner`` names the
customer) and ``request.user`` to the project's user for that owner
(``KEYWARD["USER_FOR_OWNER"]``) or a :class:`KeyHolder`;
``HasKeywardKey`` admits requests that carry a valid key with the view's
``required_scope``. Refusals answer as :mod:`keyward.wsgi` does."""

from __future__ import annotations

import json
from typing import Any, Optional, Tuple

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException
from rest_framework.permissions import BasePermission

from keyward._http import Refusal, refusal
from keyward._store import Verdict
from keyward.django.request import check, required_scope
from keyward.django.config import user_for_owner


class KeyRefused(APIException):
    """A refused key, answered with the middleware's status, headers and
    JSON body."""

    def __init__(self, refused: Refusal) -> None:
        super().__init__()
        self.status_code = refused.status
        self.detail = json.loads(refused.body)
        headers = dict(refused.headers)
        self.auth_header = headers.get("WWW-Authenticate")
        wait = headers.get("Retry-After")
        self.wait = int(wait) if wait is not None else None


class KeyHolder:
    """The user of a request admitted by its key, when the project maps
    no owner to a user of its own."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.key_id: str = verdict.key_id
        self.owner: Optional[str] = verdict.owner

    def __str__(self) -> str:
        return self.owner or self.key_id


class KeywardKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Any) -> Optional[Tuple[Any, Verdict]]:
        context = getattr(request, "parser_context", None) or {}
        answer = check(request, required_scope(context.get("view")))
        if isinstance(answer, Refusal):
            if answer.reason == "missing_key":
                return None  # another authenticator may know the request
            raise KeyRefused(answer)
        hook = user_for_owner()
        user = hook(answer.owner, answer) if hook is not None else None
        return (user if user is not None else KeyHolder(answer)), answer

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


class HasKeywardKey(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        verdict = request.auth
        if not isinstance(verdict, Verdict) or not verdict.valid:
            raise KeyRefused(refusal(None, "missing_key"))
        scope = required_scope(view)
        return scope is None or scope in verdict.scopes
