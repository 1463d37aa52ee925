"""keyward for Django and Django REST framework: an installable app.

::

    INSTALLED_APPS = [..., "keyward.django"]
    KEYWARD = {
        "DB": "/var/lib/myapp/keys",          # or a postgresql:// URL
        "HEADER": "X-API-Key",                # else Authorization: Bearer
        "TRUSTED_PROXIES": ["10.0.0.0/8"],
        "FORWARDED_HEADER": "X-Forwarded-For",
        "USER_FOR_OWNER": "myapp.keys.user_for_owner",   # optional
    }
    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["keyward.django.KeywardKeyAuthentication"],
        "DEFAULT_PERMISSION_CLASSES": ["keyward.django.HasKeywardKey"],
    }

A view's ``required_scope`` is the scope its requests must carry. The
store is opened once per process, when first needed (after a server's
fork). ``KeyAuthMiddleware`` protects plain Django views the same way.
Refusals answer as :mod:`keyward.wsgi` does: 401 (403 for a refused IP or
a missing scope, 429 with ``Retry-After`` when rate-limited or out of
quota, 503 with ``Retry-After`` when busy or unavailable) with
``{"error": ..., "reason": ...}``.
"""

from __future__ import annotations

from typing import Any

from keyward.django.middleware import KeyAuthMiddleware
from keyward.django.config import gate, settings, store

__all__ = [
    "HasKeywardKey",
    "KeyAuthMiddleware",
    "KeyHolder",
    "KeywardKeyAuthentication",
    "gate",
    "settings",
    "store",
]


def __getattr__(name: str) -> Any:
    # The DRF classes need djangorestframework: imported when asked for,
    # so a project without it can use the middleware.
    if name in ("KeywardKeyAuthentication", "HasKeywardKey", "KeyHolder", "KeyRefused"):
        from keyward.django import drf

        return getattr(drf, name)
    raise AttributeError(f"module 'keyward.django' has no attribute {name!r}")
