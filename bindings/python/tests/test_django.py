"""keyward.django against the real Django and Django REST framework: the
DRF authentication and permission classes (statuses, headers and bodies
as the WSGI middleware answers them, a view's required scope, the owner's
user), the plain middleware, the system check, and the store opened once
per process."""

import json
import os
import tempfile
from datetime import datetime, timedelta, timezone

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
            "rest_framework_api_key",
            "keyward.django",
        ],
        MIDDLEWARE=["keyward.django.KeyAuthMiddleware"],
        # A file: the keys drf-api-key creates are in a SQLite database.
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": os.path.join(tempfile.mkdtemp(), "db.sqlite3")}},
        USE_TZ=True,
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": ["keyward.django.KeywardKeyAuthentication"],
            "DEFAULT_PERMISSION_CLASSES": ["keyward.django.HasKeywardKey"],
            "UNAUTHENTICATED_USER": None,
        },
        KEYWARD={"DB": "unset"},
    )
    django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402
from django.core import checks  # noqa: E402
from django.core.management import call_command  # noqa: E402
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


def test_drf_api_key_keys_are_imported_and_keep_working(project):
    """Keys djangorestframework-api-key created (its 3.x hasher, and the
    Django password hasher 2.x used) are imported once, and each key its
    clients hold is admitted by keyward and the DRF classes above."""
    from io import StringIO

    from rest_framework_api_key.crypto import KeyGenerator
    from rest_framework_api_key.models import APIKey

    call_command("migrate", "rest_framework_api_key", verbosity=0)
    APIKey.objects.all().delete()
    current, current_key = APIKey.objects.create_key(name="CRM (3.x)")
    assert current.hashed_key.startswith("sha512$$")

    class KeyGenerator2(KeyGenerator):
        """What 2.x's KeyGenerator.hash was: make_password with Django's
        default hasher."""

        def hash(self, value):
            return make_password(value)

    APIKey.objects.key_generator = KeyGenerator2()
    try:
        older, older_key = APIKey.objects.create_key(name="Zapier (2.x)")
    finally:
        APIKey.objects.key_generator = KeyGenerator()
    assert older.hashed_key.startswith("pbkdf2_sha256$")
    revoked, revoked_key = APIKey.objects.create_key(name="gone", revoked=True)
    soon = datetime.now(timezone.utc) + timedelta(days=30)
    expiring, expiring_key = APIKey.objects.create_key(name="trial", expiry_date=soon)
    past, past_key = APIKey.objects.create_key(
        name="old trial", expiry_date=datetime.now(timezone.utc) - timedelta(days=1))
    assert APIKey.objects.is_valid(older_key) and APIKey.objects.is_valid(current_key)

    out = StringIO()
    call_command("keyward_import_drf_api_key", "--dry-run", stdout=out)
    assert "Would import 5 keys (1 revoked" in out.getvalue()
    assert project.keys() == []
    out = StringIO()
    call_command("keyward_import_drf_api_key", stdout=out)
    assert "Imported 5 keys (1 revoked, imported disabled); 0 imported before; 0 refused." in out.getvalue()
    ip = "203.0.113.9"
    assert project.verify(current_key, ip) and project.verify(older_key, ip)
    assert project.verify(expiring_key, ip)
    assert project.verify(revoked_key, ip).denial is keyward.Denial.DISABLED
    assert project.verify(past_key, ip).denial is keyward.Denial.EXPIRED
    wrong = current_key[:-1] + ("A" if current_key[-1] != "A" else "B")
    assert project.verify(wrong, ip).denial is keyward.Denial.WRONG_SECRET
    by_name = {k.name: k for k in project.keys()}
    assert by_name["trial"].expires_at == expiring.expiry_date.replace(
        microsecond=expiring.expiry_date.microsecond // 1000 * 1000)
    assert by_name["gone"].disabled and by_name["CRM (3.x)"].metadata["drf_api_key_prefix"] == current.prefix
    # A second run finds them all imported.
    out = StringIO()
    call_command("keyward_import_drf_api_key", stdout=out)
    assert "Imported 0 keys (0 revoked, imported disabled); 5 imported before; 0 refused." in out.getvalue()
    assert len(project.keys()) == 5
    # The keys clients hold, through the DRF classes.
    assert call("/anything", current_key)[0] == 200
    assert call("/anything", older_key)[0] == 200
    assert call("/anything", revoked_key)[:2] == (401, {"error": "unauthorized", "reason": "disabled"})
