"""Requests per second of one DRF view, protected by keyward and by
djangorestframework-api-key, through Django's test client in one process.

    pip install ./bindings/python django djangorestframework djangorestframework-api-key
    python bindings/python/bench_django.py [--requests 20000]

Both views return the same small JSON; the only difference is the
authentication and permission classes (keyward's: the warm in-process
verification; drf-api-key's: a query by prefix and its hasher, sha512 in
3.x, or the PBKDF2 of Django's make_password in 2.x, shown as its own
row). The database is SQLite in a temporary directory.
"""

import argparse
import os
import tempfile
import time

from django.conf import settings

TMP = tempfile.mkdtemp()
settings.configure(
    DEBUG=False,
    SECRET_KEY="bench",
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework",
                    "rest_framework_api_key", "keyward.django"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(TMP, "db.sqlite3")}},
    USE_TZ=True,
    KEYWARD={"DB": os.path.join(TMP, "keys")},
    REST_FRAMEWORK={"UNAUTHENTICATED_USER": None},
)
import django  # noqa: E402

django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402
from rest_framework_api_key.crypto import KeyGenerator  # noqa: E402
from rest_framework_api_key.models import APIKey  # noqa: E402
from rest_framework_api_key.permissions import HasAPIKey  # noqa: E402

import keyward.django  # noqa: E402
from keyward.django import HasKeywardKey, KeywardKeyAuthentication  # noqa: E402


class ByKeyward(APIView):
    authentication_classes = [KeywardKeyAuthentication]
    permission_classes = [HasKeywardKey]

    def get(self, request):
        return Response({"ok": True})


class ByDrfApiKey(APIView):
    authentication_classes = []
    permission_classes = [HasAPIKey]

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [path("keyward", ByKeyward.as_view()), path("drf", ByDrfApiKey.as_view())]


class KeyGenerator2(KeyGenerator):
    """drf-api-key 2.x's hasher: Django's make_password."""

    def hash(self, value):
        return make_password(value)


def rate(client, url, headers, n):
    assert client.get(url, **headers).status_code == 200
    start = time.perf_counter()
    for _ in range(n):
        client.get(url, **headers)
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    n = parser.parse_args().requests
    call_command("migrate", verbosity=0)
    kw_key = keyward.django.store().create_key("bench").key
    _, drf_key = APIKey.objects.create_key(name="bench")
    APIKey.objects.key_generator = KeyGenerator2()
    _, drf2_key = APIKey.objects.create_key(name="bench 2.x")
    client = Client(REMOTE_ADDR="203.0.113.9")
    rows = [
        ("keyward", rate(client, "/keyward", {"HTTP_X_API_KEY": kw_key}, n)),
        ("drf-api-key 3.x (sha512)", rate(client, "/drf", {"HTTP_AUTHORIZATION": f"Api-Key {drf_key}"}, n)),
        ("drf-api-key 2.x (PBKDF2)", rate(client, "/drf", {"HTTP_AUTHORIZATION": f"Api-Key {drf2_key}"},
                                          max(3, n // 1000))),
    ]
    for name, r in rows:
        print(f"{name:<28} {r:>9,.0f} requests/s   {1e6 / r:>9,.1f} µs/request")


if __name__ == "__main__":
    main()
