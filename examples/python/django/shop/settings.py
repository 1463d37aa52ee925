"""Settings of the example shop: keyward's app, its DRF classes, the store
named by $KEYWARD_DB."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example only: set DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "keyward.django",
]
DATABASES = {}

KEYWARD = {
    "DB": os.environ.get("KEYWARD_DB", "keys.db"),
    "HEADER": "X-API-Key",
    # Behind a proxy on this host: its X-Forwarded-For names the client.
    "TRUSTED_PROXIES": ["127.0.0.1"],
    "USER_FOR_OWNER": "shop.views.customer",
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["keyward.django.KeywardKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["keyward.django.HasKeywardKey"],
    "UNAUTHENTICATED_USER": None,
}
