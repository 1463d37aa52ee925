"""The project's store: the ``KEYWARD`` setting, read once, and the store
it names, opened once per process when first needed (after the fork of a
pre-forking server: a store a parent opened is not the child's)."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Optional, Tuple

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from keyward._http import Gate
from keyward._store import Store

_lock = threading.Lock()
_opened: Optional[Tuple[int, Store]] = None
_gate: Optional[Tuple[int, Gate]] = None

#: The keys the ``KEYWARD`` setting may have, and their defaults.
DEFAULTS: Dict[str, Any] = {
    "DB": None,
    "HEADER": "X-API-Key",
    "TRUSTED_PROXIES": (),
    "FORWARDED_HEADER": "X-Forwarded-For",
    "USER_FOR_OWNER": None,
    # Keyword arguments of keyward.Store (argon2=, usage_flush_interval=, ...).
    "OPTIONS": {},
}


def settings() -> Dict[str, Any]:
    """The ``KEYWARD`` setting with its defaults; an unknown key or a
    missing ``DB`` is ``ImproperlyConfigured``."""
    given = getattr(django_settings, "KEYWARD", None)
    if not isinstance(given, dict):
        raise ImproperlyConfigured("settings.KEYWARD is missing: a dict with at least 'DB'")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(f"settings.KEYWARD has unknown keys: {', '.join(unknown)}")
    merged = {**DEFAULTS, **given}
    if not merged["DB"]:
        raise ImproperlyConfigured("settings.KEYWARD['DB'] names no store (a path or a postgresql:// URL)")
    return merged


def store() -> Store:
    """This process's store, opened on first use."""
    global _opened
    pid = os.getpid()
    opened = _opened
    if opened is not None and opened[0] == pid:
        return opened[1]
    with _lock:
        if _opened is None or _opened[0] != pid:
            conf = settings()
            _opened = (pid, Store(str(conf["DB"]), **dict(conf["OPTIONS"])))
        return _opened[1]


def gate() -> Gate:
    """How this project's requests are checked (the settings' header and
    proxies, this process's store)."""
    global _gate
    pid = os.getpid()
    made = _gate
    if made is not None and made[0] == pid:
        return made[1]
    conf = settings()
    g = Gate(store, conf["HEADER"], conf["TRUSTED_PROXIES"], conf["FORWARDED_HEADER"])
    _gate = (pid, g)
    return g


def user_for_owner() -> Optional[Callable[..., Any]]:
    """The project's hook from a key's owner to a user, if it has one."""
    hook = settings()["USER_FOR_OWNER"]
    if hook is None or callable(hook):
        return hook
    return import_string(hook)


def reset() -> None:
    """Forgets the store and the settings (tests that change them)."""
    global _opened, _gate
    with _lock:
        if _opened is not None and _opened[0] == os.getpid():
            _opened[1].close()
        _opened = None
        _gate = None
