"""The exceptions of the package: one class per kind of failure, and
the C library's statuses mapped to them (the table is generated from the
same Rust table as the C enum)."""

from __future__ import annotations

from typing import Dict

from keyward._generated import STATUS_EXCEPTIONS
from keyward._native import ffi, lib

__all__ = [
    "KeywardError",
    "InvalidInput",
    "NotFound",
    "StoreLocked",
    "StoreForked",
    "StorageError",
    "StoreClosed",
    "InternalError",
]


class KeywardError(Exception):
    """Base of every keyward error. ``status`` is the C ``kw_status`` number."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class InvalidInput(KeywardError):
    """An argument was rejected (bad name, id, network, IP, JSON, option); nothing changed."""


class NotFound(KeywardError):
    """No key (or whitelist entry) has this id."""


class StoreForked(KeywardError):
    """The process forked after opening this store: open it again in the
    child (for gunicorn, in the ``post_fork`` hook, or without ``--preload``)."""


class StoreLocked(KeywardError):
    """The store cannot be attached to: its owning process runs as another
    user, or ``require_owner=True`` and another process owns it."""


class StorageError(KeywardError):
    """The storage layer failed; nothing was changed."""


class StoreClosed(KeywardError):
    """The store was used after ``close()``."""


class InternalError(KeywardError):
    """An internal failure (or a panic inside the library)."""


# Every failing kw_status, by the library's own numbers, to its class
# (the table is generated from the same Rust table as the C enum).
_STATUS_ERRORS: Dict[int, type] = {status: globals()[name] for status, name in STATUS_EXCEPTIONS.items()}


def _last_error() -> str:
    size = lib.kw_last_error_message(ffi.NULL, 0)
    buf = ffi.new("char[]", size + 1)
    lib.kw_last_error_message(buf, size + 1)
    return ffi.string(buf).decode("utf-8", "replace")


def _check(status: int) -> None:
    """Turns a kw_status into an exception of the matching class."""
    if status != 0:
        raise _STATUS_ERRORS.get(status, KeywardError)(_last_error(), status)
