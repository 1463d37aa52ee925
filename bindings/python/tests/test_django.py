"""keyward.django against the real Django and Django REST framework: the
DRF authentication and permission classes (statuses, headers and bodies
as the WSGI middleware answers them, a view's required scope, the owner's
user), the plain middleware, the system check, and the store opened once
per process."""

import json
import os

import pytest

django = pytest.importorskip("django") if os.environ.get("CI") != "true" else __import__("django")
from django.conf import settings as django_settings  # noqa: E402

if not django_settings.configured:
    django_settings.configure(
        DEBUG=False,
        SECRET_KEY="test only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "keyward.django",
        ],
        MIDDLEWARE=["keyward.django.KeyAuthMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": ["keyward.django.KeywardKeyAuthentication"],
            "DEFAULT_PERMISSION_CLASSES": ["keyward.django.HasKeywardKey"],
            "UNAUTHENTICATED_USER": None,
        },
        KEYWARD={"DB": "unset"},
    )
    django.setup()

from django.core import checks  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

import keyward  # noqa: E402
import keyward.django  # noqa: E402
from keyward.django import config as keyward_config  # noqa: E402
from keyward.django.middleware import exempt  # noqa: E402

from conftest import CHEAP  # noqa: E402


class Orders(APIView):
    required_scope = "orders:read"

    def get(self, request):
        return Response({"owner": request.auth.owner, "user": str(request.user),
                         "scopes": list(request.auth.scopes)})


class Anything(APIView):
    def get(self, request):
        return Response({"key_id": request.auth.key_id})


def plain(request):
    return JsonResponse({"owner": request.keyward_verdict.owner})


def plain_scoped(request):
    return JsonResponse({"ok": True})


plain_scoped.required_scope = "orders:write"


@exempt
def health(request):
    return JsonResponse({"ok": True})


urlpatterns = [
    path("orders", Orders.as_view()),
    path("anything", Anything.as_view()),
    path("plain", plain),
    path("plain/write", plain_scoped),
    path("health", health),
]


class Customer:
    def __init__(self, owner):
        self.owner = owner
        self.is_authenticated = True

    def __str__(self):
        return f"customer {self.owner}"


def user_for_owner(owner, verdict):
    return Customer(owner) if owner else None


@pytest.fixture
def project(tmp_path):
    """The KEYWARD setting on a fresh store; the store keyward.django opens."""
    db = str(tmp_path / "keys")
    keyward.Store(db, argon2=CHEAP).close()
    django_settings.KEYWARD = {"DB": db, "OPTIONS": {"argon2": CHEAP}, "TRUSTED_PROXIES": ["127.0.0.1"]}
    keyward_config.reset()
    yield keyward.django.store()
    keyward_config.reset()


def call(url, key=None, **headers):
    if key is not None:
        headers["HTTP_X_API_KEY"] = key
    response = Client(REMOTE_ADDR="203.0.113.9").get(url, **headers)
    return response.status_code, json.loads(response.content), response


def test_drf_admits_a_key_with_the_views_scope_and_names_its_owner(project):
    good = project.create_key("CRM", owner="acme", scopes=["orders:read"])
    status, body, _ = call("/orders", good.key)
    assert status == 200
    assert body == {"owner": "acme", "user": "acme", "scopes": ["orders:read"]}
    # Authorization: Bearer works as the header does.
    status, _, _ = call("/orders", HTTP_AUTHORIZATION=f"Bearer {good.key}")
    assert status == 200


def test_drf_refusals_answer_as_the_middleware_does(project):
    unscoped = project.create_key("CRM", owner="acme")
    status, body, r = call("/orders", unscoped.key)
    assert (status, body) == (403, {"error": "forbidden", "reason": "scope_missing"})
    status, body, r = call("/orders")
    assert (status, body) == (401, {"error": "unauthorized", "reason": "missing_key"})
    assert r["WWW-Authenticate"] == 'Bearer realm="api"'
    status, body, _ = call("/orders", "kw_nonsense")
    assert (status, body) == (401, {"error": "unauthorized", "reason": "malformed"})
    limited = project.create_key("burst", limits=[("burst", 1, 3600)])
    assert call("/anything", limited.key)[0] == 200
    status, body, r = call("/anything", limited.key)
    assert (status, body) == (429, {"error": "too_many_requests", "reason": "rate_limited"})
    assert int(r["Retry-After"]) > 3000
    fenced = project.create_key("office", whitelist=[("office", "198.51.100.0/24")])
    status, body, _ = call("/anything", fenced.key)
    assert (status, body) == (403, {"error": "forbidden", "reason": "ip_not_allowed"})
    # Through a trusted proxy, the forwarded client is the one checked.
    forwarded = Client(REMOTE_ADDR="127.0.0.1").get(
        "/anything", HTTP_X_API_KEY=fenced.key, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert forwarded.status_code == 200


def test_the_projects_hook_maps_an_owner_to_its_user(project):
    django_settings.KEYWARD = {**django_settings.KEYWARD, "USER_FOR_OWNER": f"{__name__}.user_for_owner"}
    keyward_config.reset()
    good = keyward.django.store().create_key("CRM", owner="acme", scopes=["orders:read"])
    assert call("/orders", good.key)[1]["user"] == "customer acme"


def test_the_plain_middleware_guards_django_views(project):
    good = project.create_key("CRM", owner="acme")
    assert call("/plain", good.key)[:2] == (200, {"owner": "acme"})
    status, body, r = call("/plain")
    assert (status, body) == (401, {"error": "unauthorized", "reason": "missing_key"})
    assert r["WWW-Authenticate"] == 'Bearer realm="api"'
    status, body, _ = call("/plain/write", good.key)
    assert (status, body) == (403, {"error": "forbidden", "reason": "scope_missing"})
    assert call("/health")[:2] == (200, {"ok": True})
    # A DRF view is left to its authentication class: one verification.
    before = project.usage(good.info.id).totals.allowed
    assert call("/anything", good.key)[0] == 200
    assert project.usage(good.info.id).totals.allowed == before + 1


def test_the_system_check_names_a_missing_or_unreadable_store(tmp_path, project):
    assert [m for m in checks.run_checks(tags=["keyward"])] == []
    django_settings.KEYWARD = {"DB": str(tmp_path / "nowhere")}
    ids = [m.id for m in checks.run_checks(tags=["keyward"])]
    assert ids == ["keyward.E002"]
    del django_settings.KEYWARD
    assert [m.id for m in checks.run_checks(tags=["keyward"])] == ["keyward.E001"]
    django_settings.KEYWARD = {"DB": str(tmp_path / "keys"), "COLOUR": "red"}
    assert [m.id for m in checks.run_checks(tags=["keyward"])] == ["keyward.E001"]
    if os.geteuid() != 0:  # root reads everything
        locked = tmp_path / "locked"
        keyward.Store(str(locked), argon2=CHEAP).close()
        locked.chmod(0)
        django_settings.KEYWARD = {"DB": str(locked)}
        assert [m.id for m in checks.run_checks(tags=["keyward"])] == ["keyward.E003"]
        locked.chmod(0o700)


def test_the_store_is_opened_once_per_process(project):
    assert keyward.django.store() is keyward.django.store() is project
