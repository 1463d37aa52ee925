"""System checks: the ``KEYWARD`` setting, and a store that is there and
this process can open (``manage.py check``)."""

from __future__ import annotations

import os
from typing import Any, List

from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured

from keyward._errors import KeywardError
from keyward._store import Store
from keyward.django.config import settings


@register("keyward")
def check_store(app_configs: Any = None, **kwargs: Any) -> List[CheckMessage]:
    try:
        conf = settings()
    except ImproperlyConfigured as e:
        return [Error(str(e), hint="See keyward.django's documentation.", id="keyward.E001")]
    db = str(conf["DB"])
    if "://" not in db:
        if not os.path.isdir(db):
            return [Error(f"no keyward store at {db}",
                          hint="Create it with `keyward --db PATH key list`, or fix KEYWARD['DB'].",
                          id="keyward.E002")]
        if not os.access(db, os.R_OK | os.W_OK | os.X_OK):
            return [Error(f"the keyward store at {db} is not readable and writable by this user",
                          id="keyward.E003")]
    try:
        Store(db, **dict(conf["OPTIONS"])).close()
    except (KeywardError, OSError, TypeError) as e:
        return [Error(f"the keyward store does not open: {e}", id="keyward.E003")]
    return []
