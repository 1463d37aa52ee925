"""The Store, over the C ABI (cffi): every call, its arguments checked
and converted, its answer read into the records of ``_records``."""

from __future__ import annotations

import ipaddress
import json
import os
import functools
import urllib.parse
import weakref
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from keyward import _fast
from keyward._errors import InvalidInput, StoreClosed, _check
from keyward._generated import Denial
from keyward._native import ffi, lib
from keyward._records import (
    _DENIALS,
    CheckReport,
    CopyReport,
    CreatedKey,
    DeadLetter,
    Event,
    KeyInfo,
    KeyPage,
    Metrics,
    PluginInfo,
    Quota,
    RecentRequest,
    Usage,
    Verdict,
    Whitelist,
    WhitelistEntry,
    _datetime_ms,
    _known,
    _rfc3339,
    _time,
)

#: The default of :meth:`Store.update`'s arguments: "leave it as it is"
#: (``None`` clears).
_UNCHANGED: Any = object()

__all__ = ["Store"]


def _text(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates
        raise InvalidInput(f"{what} is not valid Unicode text: {e}") from None


# ---------------------------------------------------------------- the store

_KEY_BUFFER_LEN = lib.KW_KEY_BUFFER_LEN
_ID_BUFFER_LEN = lib.KW_KEY_ID_BUFFER_LEN
_ENTRY_BUFFER_LEN = lib.KW_ENTRY_ID_BUFFER_LEN


class _Handle:
    """The C handle and the calls in flight on it.

    The C library frees a store in ``kw_store_close``/``kw_store_free``, and
    cffi releases the GIL during every call: without this, closing on one
    thread while another is inside ``kw_verify`` would free memory in use.
    Every call enters and leaves; closing refuses new calls, waits for those
    in flight, and only then hands the pointer over to be freed. The count
    is kept natively (``keyward._fast.Gate``), where ``Store.verify`` enters
    and leaves without a Python frame.
    """

    __slots__ = ("ptr", "gate")

    def __init__(self, ptr: Any) -> None:
        self.ptr = ptr
        self.gate = _fast.Gate(int(ffi.cast("uintptr_t", ptr)))

    @property
    def closing(self) -> bool:
        return self.gate.closing

    def enter(self) -> Any:
        if not self.gate.enter():
            raise StoreClosed("the store is closed")
        return self.ptr

    def leave(self) -> None:
        self.gate.leave()

    def take(self, timeout: Optional[float] = None) -> Any:
        """Closes to new calls, waits for those in flight, and returns the
        pointer to free: NULL when another closer has it, or when calls were
        still in flight after ``timeout`` (the store is then left open,
        never freed under a running call)."""
        if not self.gate.take(timeout):
            return ffi.NULL
        ptr, self.ptr = self.ptr, ffi.NULL
        return ptr


def _free_handle(handle: _Handle) -> None:
    """Finaliser (also at interpreter exit): a forgotten store is still
    closed and its usage flushed, once calls on other threads have returned."""
    ptr = handle.take(timeout=30.0)
    if ptr != ffi.NULL:
        lib.kw_store_free(ptr)


def _in_flight(method: Any) -> Any:
    """Runs ``method`` as one call on the store's handle (see ``_Handle``)."""

    @functools.wraps(method)
    def call(self: "Store", *args: Any, **kwargs: Any) -> Any:
        handle = self._life
        handle.enter()
        try:
            return method(self, *args, **kwargs)
        finally:
            handle.leave()

    return call


def _redacted(location: str) -> str:
    """A store's path or URL as it may be shown: no password. The URL is
    read by urllib; only the password's characters are replaced."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme not in ("postgres", "postgresql"):
        return location
    shown = location
    if parts.password is not None:
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        shown = shown.replace(parts.netloc, f"{user}:***@{hosts}", 1)
    base, question, rest = shown.partition("?")
    if question:
        query, hash_sign, fragment = rest.partition("#")
        pairs = []
        for raw in query.split("&"):
            name = urllib.parse.parse_qsl(raw, keep_blank_values=True)
            if name and name[0][0].lower() in ("password", "sslpassword"):
                raw = raw.split("=", 1)[0] + "=***"
            pairs.append(raw)
        shown = base + question + "&".join(pairs) + hash_sign + fragment
    return shown


class Store:
    """An open key store: a directory (sled) or a ``postgresql://`` URL.

    ``Store(path, *, prefix=None, argon2=None, usage_flush_ms=None,
    max_concurrent_hashes=None, require_owner=False, attach_group=None,
    actor=None)`` where ``argon2`` is a mapping with ``memory_kib``,
    ``iterations`` and ``parallelism``, and ``actor`` names who this
    handle's changes are by (``data.actor`` of their events; by default
    ``<os user>@<host name>``). Use it as a context manager, or call :meth:`close`.
    Safe to share between threads.

    Any number of processes may open one sled store: the first owns it and
    serves the others over a Unix socket in the store directory; the
    others attach (each verifies from its own in-memory index) and one of
    them takes over when the owner exits or dies. :meth:`status` tells
    which. With ``require_owner=True`` an open that would attach raises
    :class:`StoreLocked` instead; ``attach_group`` names a group whose
    members may attach to a store this process owns. Open the store after
    ``fork()`` (gunicorn: in ``post_fork``), never before.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        prefix: Optional[str] = None,
        argon2: Optional[Dict[str, int]] = None,
        usage_flush_ms: Optional[int] = None,
        max_concurrent_hashes: Optional[int] = None,
        require_owner: bool = False,
        attach_group: Optional[Union[str, int]] = None,
        actor: Optional[str] = None,
    ) -> None:
        self._life = _Handle(ffi.NULL)
        self._life.take()
        self._finalizer: Optional[weakref.finalize] = None
        opts = ffi.new("kw_options *")
        opts.size = ffi.sizeof("kw_options")
        keep = []
        if prefix is not None:
            p = ffi.new("char[]", _text(prefix, "prefix"))
            keep.append(p)
            opts.prefix = p
        if argon2:
            unknown = set(argon2) - {"memory_kib", "iterations", "parallelism"}
            if unknown:
                raise InvalidInput(f"unknown argon2 parameters: {sorted(unknown)}")
            opts.argon2_memory_kib = _u32(argon2.get("memory_kib", 0), "argon2.memory_kib")
            opts.argon2_iterations = _u32(argon2.get("iterations", 0), "argon2.iterations")
            opts.argon2_parallelism = _u32(argon2.get("parallelism", 0), "argon2.parallelism")
        if usage_flush_ms is not None:
            opts.usage_flush_interval_ms = _u32(usage_flush_ms, "usage_flush_ms", minimum=1)
        if max_concurrent_hashes is not None:
            opts.max_concurrent_hashes = _u32(max_concurrent_hashes, "max_concurrent_hashes", minimum=1)
        opts.require_owner = bool(require_owner)
        if attach_group is not None:
            g = ffi.new("char[]", _text(str(attach_group), "attach_group"))
            keep.append(g)
            opts.attach_group = g
        if actor is not None:
            a = ffi.new("char[]", _text(actor, "actor"))
            keep.append(a)
            opts.actor = a
        out = ffi.new("kw_store **")
        _check(lib.kw_store_open(_text(os.fspath(path), "path"), opts, out))
        self._life = _Handle(out[0])
        self._path = os.fspath(path)
        self._finalizer = weakref.finalize(self, _free_handle, self._life)
        self._key_len = lib.kw_key_buffer_len(out[0])

    # -- lifetime -----------------------------------------------------

    def close(self) -> None:
        """Flushes pending usage and releases the store. Idempotent. Calls
        in flight on other threads finish first; later calls raise
        :class:`StoreClosed`."""
        ptr = self._life.take()
        if self._finalizer is not None:
            self._finalizer.detach()
        if ptr != ffi.NULL:
            _check(lib.kw_store_close(ptr))

    @property
    def closed(self) -> bool:
        return self._life.closing

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<keyward.Store {_redacted(self._path)!r} {state}>"

    def _h(self) -> Any:
        """The handle, inside a call (see ``_in_flight``)."""
        return self._life.ptr

    @_in_flight
    def status(self) -> Dict[str, Any]:
        """Where this process stands with its store: ``role`` is ``"owner"``
        (it owns the sled store and serves the others), ``"attached"`` (to
        the process ``owner_pid``), ``"shared"`` (PostgreSQL) or
        ``"memory"``; also ``pid``, ``socket``, ``path`` and ``keys``."""
        return self._json(lib.kw_store_status_json, self._h())

    @_in_flight
    def metrics(self) -> Metrics:
        """What this handle has done and holds (counters since it opened,
        gauges as they are): for monitoring, see ``keyward.prometheus``."""
        return Metrics._from(self._json(lib.kw_metrics_json, self._h()))

    @_in_flight
    def check(self, repair: bool = False) -> CheckReport:
        """Walks every table and reports what does not agree: records that
        do not decode, owner-index rows and import lookups that do not
        match their records, quota, limit and usage rows of no key, events
        and plugin state that do not hold together. With ``repair=True``,
        what is derived from the records (the owner index, the import
        lookups) is rebuilt and rows of no key are removed; records are
        never touched (a store that changed meanwhile raises
        :class:`StorageError`: check again)."""
        return CheckReport._from(self._json(lib.kw_store_check_json, self._h(), bool(repair)))

    @_in_flight
    def backup(self, path: Union[str, "os.PathLike[str]"]) -> CopyReport:
        """Writes a consistent snapshot of this store, taken while other
        processes go on verifying and writing, as a new sled store at
        ``path`` (a directory that does not exist yet, or is empty) that
        :class:`Store` opens directly. A destination with anything in it
        raises :class:`InvalidInput` and is left alone."""
        return _known(CopyReport, self._json(
            lib.kw_store_backup_json, self._h(), _text(os.fspath(path), "path")))

    @_in_flight
    def copy_to(self, dest: Union[str, "os.PathLike[str]"]) -> CopyReport:
        """Copies this store, as one consistent snapshot, into the empty
        store ``dest``: a sled directory or a ``postgresql://`` URL whose
        schema holds nothing. Key ids are kept (every key verifies against
        the copy as against this store), event numbers continue, plugins do
        not deliver again. A destination that is not empty raises
        :class:`InvalidInput`."""
        return _known(CopyReport, self._json(
            lib.kw_store_copy_json, self._h(), _text(os.fspath(dest), "dest")))

    # -- verify -------------------------------------------------------

    def verify(self, key: str, ip: str, integration: Optional[str] = None, *,
               scope: Optional[str] = None) -> Verdict:
        """Verifies a presented key from client address ``ip``.

        ``integration`` (e.g. the User-Agent) is recorded in usage. With
        ``scope``, a key that does not carry it is refused (``SCOPE_MISSING``).
        Checks run in this order: the key, disabled or expired, the
        whitelist, the secret, the scope, the rate limits, the quota; only a
        request that passes everything before spends a limit or the quota.
        A key that is not even well-formed is a ``MALFORMED`` verdict, not an
        error.
        """
        # One native call for the usual input (a str or bytes key, an
        # address as text); anything else, and a closed store, goes the
        # general way below, which reports the typed error.
        verdict = self._life.gate.verify(key, ip, integration, scope)
        if verdict is not None:
            return verdict
        life = self._life
        h = life.enter()
        try:
            return self._verify(h, key, ip, integration, scope)
        finally:
            life.leave()

    def _verify(self, h: Any, key: str, ip: str, integration: Optional[str],
                scope: Optional[str] = None) -> Verdict:
        out = ffi.new("kw_verdict *")
        out.size = ffi.sizeof("kw_verdict")
        kb = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else bytes(key)
        if isinstance(ip, str):
            if "\0" in ip:
                raise InvalidInput("ip must not contain NUL characters")
            ib = ip.encode("utf-8", "surrogatepass")
        else:
            ib = _ip_text(ip)
        ig = ffi.NULL if integration is None else _text(integration, "integration")
        sc = ffi.NULL if scope is None else _text(scope, "scope")
        _check(lib.kw_verify_scoped(h, kb, len(kb), ib, ig, sc, out))
        owner = ffi.string(out.owner).decode() if out.owner[0] != b"\0" else None
        if out.valid:
            key_id = ffi.string(out.key_id).decode()
            # kw_verify allocates nothing, so the scopes come from the Overview.
            info = self._json(lib.kw_key_get_json, h, key_id.encode())
            return Verdict(True, None, key_id, out.generation, out.in_grace,
                           None, owner, scopes=tuple(info.get("scopes", ())))
        denial = _DENIALS[out.denial]
        key_id = ffi.string(out.key_id).decode() or None
        rotated = None
        if denial is Denial.ROTATED:
            rotated = _datetime_ms(out.rotated_at_unix_ms)
        retry = out.retry_after_ms / 1000 if denial is Denial.RATE_LIMITED else None
        return Verdict(False, denial, key_id, 0, False, rotated, owner, retry_after=retry)

    # -- lifecycle ----------------------------------------------------

    @_in_flight
    def create_key(
        self,
        name: str,
        *,
        expires_at: Optional[datetime] = None,
        metadata: Optional[Dict[str, Any]] = None,
        whitelist: Sequence[Tuple[str, str]] = (),
        owner: Optional[str] = None,
        limits: Sequence[Tuple[str, int, float]] = (),
        quota: Optional[Union[int, Quota]] = None,
        scopes: Sequence[str] = (),
        description: Optional[str] = None,
    ) -> CreatedKey:
        """Creates a key. ``whitelist`` is ``[(name, ip_or_cidr), ...]`` and
        switches the restriction on; ``owner`` is the account the key belongs
        to (your customer id, 1-128 bytes); ``limits`` is ``[(name, limit,
        window_seconds), ...]``; ``quota`` a number of requests (or a
        :class:`Quota` with its refill); ``scopes`` what the key may be used
        for; ``description`` what it is for (up to 1,024 bytes). The
        plaintext is in the result only."""
        options = _key_options(owner, expires_at, metadata, whitelist, limits, quota, scopes, description)
        opts = _text(json.dumps(options), "options") if options else ffi.NULL
        return self._created(lib.kw_key_create_json, _text(name, "name"), opts)

    @_in_flight
    def import_key(
        self,
        name: str,
        *,
        plaintext: Optional[str] = None,
        sha256: Optional[str] = None,
        phc: Optional[str] = None,
        prefix: Optional[str] = None,
        owner: Optional[str] = None,
        expires_at: Optional[datetime] = None,
        metadata: Optional[Dict[str, Any]] = None,
        whitelist: Sequence[Tuple[str, str]] = (),
        limits: Sequence[Tuple[str, int, float]] = (),
        quota: Optional[Union[int, Quota]] = None,
        scopes: Sequence[str] = (),
        description: Optional[str] = None,
        disabled: bool = False,
    ) -> KeyInfo:
        """Imports a key another system issued (with the settings of
        :meth:`create_key`; ``disabled`` for one that system had revoked):
        exactly one of ``plaintext``
        (the key itself; hashed with argon2id, not kept), ``sha256`` (its
        SHA-256 in hex) or ``phc`` (a bcrypt, argon2, ``pbkdf2_sha256$`` or
        ``sha512$$`` hash of it, as Django and djangorestframework-api-key
        write them) with
        ``prefix`` (the key's first characters, kept beside such hashes).
        The key string its holder has then verifies like any key; importing
        the same key (or prefix) twice raises :class:`InvalidInput`."""
        given = [(k, v) for k, v in (("plaintext", plaintext), ("sha256", sha256), ("phc", phc)) if v is not None]
        if len(given) != 1:
            raise InvalidInput("give exactly one of plaintext=, sha256= or phc=")
        kind, secret = given[0]
        if (prefix is not None) != (kind == "phc"):
            raise InvalidInput("prefix= goes with phc=, and phc= needs it")
        if not isinstance(secret, str):
            raise InvalidInput(f"{kind} must be a str")
        options = _key_options(owner, expires_at, metadata, whitelist, limits, quota, scopes, description)
        options.update(kind=kind, secret=secret)
        if disabled:
            options["disabled"] = True
        if prefix is not None:
            options["prefix"] = prefix
        out = ffi.new("char[]", _ID_BUFFER_LEN)
        _check(lib.kw_key_import(self._h(), _text(name, "name"), _text(json.dumps(options), "options"),
                                 out, _ID_BUFFER_LEN))
        return KeyInfo._from(self._json(lib.kw_key_get_json, self._h(), out))

    @_in_flight
    def regenerate(self, key_id: str, grace: Union[int, float, timedelta] = 0) -> CreatedKey:
        """Gives the key a new secret. The old one stops working now
        (``grace=0``) or after ``grace`` (seconds or a timedelta)."""
        seconds = grace.total_seconds() if isinstance(grace, timedelta) else grace
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise InvalidInput("grace must be a non-negative number of seconds or a timedelta")
        return self._created(lib.kw_key_regenerate_json, _text(key_id, "key_id"), int(seconds))

    def _created(self, fn: Any, *args: Any) -> CreatedKey:
        """The plaintext key and its Overview from one C call: no second
        read can fail after the key exists and lose its only copy."""
        key = ffi.new("char[]", _KEY_BUFFER_LEN)
        out = ffi.new("char **")
        _check(fn(self._h(), *args, key, _KEY_BUFFER_LEN, out))
        try:
            plaintext = ffi.string(key).decode()
            ffi.memmove(key, b"\0" * _KEY_BUFFER_LEN, _KEY_BUFFER_LEN)
            info = KeyInfo._from(json.loads(ffi.string(out[0]).decode("utf-8")))
        finally:
            lib.kw_string_free(out[0])
        return CreatedKey(plaintext, info)

    @_in_flight
    def keys(self, owner: Optional[str] = None) -> List[KeyInfo]:
        """Every key, oldest first; with ``owner``, that account's keys only
        (through the owner index, however many keys the store holds)."""
        if owner is None:
            return [KeyInfo._from(d) for d in self._json(lib.kw_key_list_json, self._h())]
        found = self._json(lib.kw_key_list_owner_json, self._h(), _text(owner, "owner"))
        return [KeyInfo._from(d) for d in found]

    @_in_flight
    def key_page(self, owner: Optional[str] = None, after: Optional[str] = None,
                 limit: int = 100) -> KeyPage:
        """Up to ``limit`` keys (1 to 1000) — of ``owner``, or of every
        account — whose ids come after ``after``, in id order. Start with
        ``after=None``, then pass each page's ``next`` until it is ``None``."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise InvalidInput("limit must be a positive integer")
        page = self._json(
            lib.kw_key_list_page_json, self._h(),
            _text(owner, "owner") if owner is not None else ffi.NULL,
            _text(after, "after") if after is not None else ffi.NULL,
            limit,
        )
        return KeyPage([KeyInfo._from(d) for d in page["keys"]], page["next"])

    @_in_flight
    def owners(self) -> List[Tuple[str, int]]:
        """Every account with keys, by owner id: ``[(owner, key_count), ...]``."""
        return [(o["owner"], o["keys"]) for o in self._json(lib.kw_owners_json, self._h())]

    @_in_flight
    def owner_usage(self, owner: str) -> Dict[str, Any]:
        """One account's usage across its keys: ``{"owner", "keys", "totals":
        {"allowed", "denied", ...}, "last_used_at"}`` (a datetime or ``None``)."""
        u = self._json(lib.kw_owner_usage_json, self._h(), _text(owner, "owner"))
        u["last_used_at"] = _time(u["last_used_at"])
        return u

    @_in_flight
    def delete_owner_keys(self, owner: str) -> int:
        """Closes an account: deletes all of its keys in one durable
        transaction (a ``key.deleted`` event each). Returns how many."""
        deleted = ffi.new("size_t *")
        _check(lib.kw_owner_delete_keys(self._h(), _text(owner, "owner"), deleted))
        return int(deleted[0])

    @_in_flight
    def set_limits(self, key_id: str, limits: Sequence[Tuple[str, int, float]]) -> KeyInfo:
        """Replaces the key's rate limits: ``[(name, limit, window_seconds),
        ...]`` (``[]`` removes them)."""
        body = json.dumps(_limits(limits))
        _check(lib.kw_key_set_limits(self._h(), _text(key_id, "key_id"), _text(body, "limits")))
        return KeyInfo._from(self._json(lib.kw_key_get_json, self._h(), _text(key_id, "key_id")))

    @_in_flight
    def set_quota(self, key_id: str, remaining: Optional[int],
                  refill: Optional[Tuple[int, str]] = None) -> KeyInfo:
        """Sets the key's quota to ``remaining`` requests, reset to
        ``refill=(amount, "daily"|"monthly")`` at each period's start (00:00
        UTC; the 1st of the month); ``remaining=None`` removes the quota."""
        if remaining is None:
            if refill is not None:
                raise InvalidInput("refill= needs remaining=")
            body = ffi.NULL
        else:
            q = Quota(remaining, *(refill if refill is not None else (None, None)))
            body = _text(json.dumps(_quota_json(q)), "quota")
        _check(lib.kw_key_set_quota(self._h(), _text(key_id, "key_id"), body))
        return KeyInfo._from(self._json(lib.kw_key_get_json, self._h(), _text(key_id, "key_id")))

    @_in_flight
    def set_scopes(self, key_id: str, scopes: Sequence[str]) -> KeyInfo:
        """Replaces the key's scopes (``()`` removes them)."""
        body = json.dumps(_scopes(scopes))
        _check(lib.kw_key_set_scopes(self._h(), _text(key_id, "key_id"), _text(body, "scopes")))
        return KeyInfo._from(self._json(lib.kw_key_get_json, self._h(), _text(key_id, "key_id")))

    @_in_flight
    def set_owner(self, key_id: str, owner: Optional[str]) -> KeyInfo:
        """Moves the key to another account, or to none (``owner=None``):
        an account merge. Emits ``key.updated`` with ``owner_from`` and
        ``owner_to``."""
        _check(lib.kw_key_set_owner(
            self._h(), _text(key_id, "key_id"),
            _text(owner, "owner") if owner is not None else ffi.NULL,
        ))
        return KeyInfo._from(self._json(lib.kw_key_get_json, self._h(), _text(key_id, "key_id")))

    @_in_flight
    def key(self, key_id: str) -> KeyInfo:
        """One key's Overview."""
        return KeyInfo._from(self._json(lib.kw_key_get_json, self._h(), _text(key_id, "key_id")))

    @_in_flight
    def delete(self, key_id: str) -> None:
        """Deletes the key and its usage; its secrets stop working now."""
        _check(lib.kw_key_delete(self._h(), _text(key_id, "key_id")))

    @_in_flight
    def set_disabled(self, key_id: str, disabled: bool) -> KeyInfo:
        _check(lib.kw_key_set_disabled(self._h(), _text(key_id, "key_id"), bool(disabled)))
        return self.key(key_id)

    @_in_flight
    def rename(self, key_id: str, name: str) -> KeyInfo:
        _check(lib.kw_key_rename(self._h(), _text(key_id, "key_id"), _text(name, "name")))
        return self.key(key_id)

    @_in_flight
    def update(
        self,
        key_id: str,
        *,
        name: Any = _UNCHANGED,
        disabled: Any = _UNCHANGED,
        expires_at: Any = _UNCHANGED,
        metadata: Any = _UNCHANGED,
        owner: Any = _UNCHANGED,
        limits: Any = _UNCHANGED,
        quota: Any = _UNCHANGED,
        scopes: Any = _UNCHANGED,
        whitelist_enabled: Any = _UNCHANGED,
        description: Any = _UNCHANGED,
    ) -> KeyInfo:
        """Changes the key's settings in one atomic, durable write: every
        argument given, or (one invalid) none. An argument left out keeps
        its setting; ``None`` clears ``expires_at``, ``metadata``,
        ``owner``, ``limits``, ``quota``, ``scopes`` and ``description``. The values are
        those of :meth:`create_key`. Each setting changed writes the event
        its ``set_*`` method writes."""
        patch: Dict[str, Any] = {}
        if name is not _UNCHANGED:
            patch["name"] = name
        if disabled is not _UNCHANGED:
            patch["disabled"] = disabled
        if expires_at is not _UNCHANGED:
            patch["expires_at"] = None if expires_at is None else _rfc3339(expires_at)
        if metadata is not _UNCHANGED:
            patch["metadata"] = metadata
        if owner is not _UNCHANGED:
            patch["owner"] = owner
        if limits is not _UNCHANGED:
            patch["limits"] = None if limits is None else _limits(limits)
        if quota is not _UNCHANGED:
            patch["quota"] = None if quota is None else _quota_json(quota)
        if scopes is not _UNCHANGED:
            patch["scopes"] = None if scopes is None else _scopes(scopes)
        if whitelist_enabled is not _UNCHANGED:
            patch["whitelist_enabled"] = whitelist_enabled
        if description is not _UNCHANGED:
            patch["description"] = description
        for field in ("name", "disabled", "whitelist_enabled"):
            if field in patch and patch[field] is None:
                raise InvalidInput(f"{field}=None: leave it out to keep it")
        for field in ("disabled", "whitelist_enabled"):
            if field in patch and not isinstance(patch[field], bool):
                raise InvalidInput(f"{field} must be a bool")
        try:
            text = json.dumps(patch)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"not JSON: {e}") from None
        return KeyInfo._from(
            self._json(lib.kw_key_update_json, self._h(), _text(key_id, "key_id"), _text(text, "patch"))
        )

    @_in_flight
    def set_expiry(self, key_id: str, expires_at: Optional[datetime]) -> KeyInfo:
        at = ffi.NULL if expires_at is None else _text(_rfc3339(expires_at), "expires_at")
        _check(lib.kw_key_set_expiry(self._h(), _text(key_id, "key_id"), at))
        return self.key(key_id)

    @_in_flight
    def set_metadata(self, key_id: str, metadata: Optional[Dict[str, Any]]) -> KeyInfo:
        m = ffi.NULL if metadata is None else _text(json.dumps(metadata), "metadata")
        _check(lib.kw_key_set_metadata(self._h(), _text(key_id, "key_id"), m))
        return self.key(key_id)

    # -- whitelist ----------------------------------------------------

    @_in_flight
    def whitelist(self, key_id: str) -> Whitelist:
        return Whitelist._from(self._json(lib.kw_whitelist_json, self._h(), _text(key_id, "key_id")))

    @_in_flight
    def set_whitelist_enabled(self, key_id: str, enabled: bool) -> Whitelist:
        _check(lib.kw_whitelist_set_enabled(self._h(), _text(key_id, "key_id"), bool(enabled)))
        return self.whitelist(key_id)

    @_in_flight
    def add_whitelist_entry(self, key_id: str, name: str, network: str) -> WhitelistEntry:
        """Adds a named IP or CIDR network (host bits set is an error)."""
        out = ffi.new("char[]", _ENTRY_BUFFER_LEN)
        _check(
            lib.kw_whitelist_add(
                self._h(), _text(key_id, "key_id"), _text(name, "name"), _text(network, "network"), out, _ENTRY_BUFFER_LEN
            )
        )
        entry_id = ffi.string(out).decode()
        return next(e for e in self.whitelist(key_id).entries if e.id == entry_id)

    @_in_flight
    def remove_whitelist_entry(self, key_id: str, entry_id: str) -> None:
        _check(lib.kw_whitelist_remove(self._h(), _text(key_id, "key_id"), _text(entry_id, "entry_id")))

    # -- usage, events ------------------------------------------------

    @_in_flight
    def usage(self, key_id: str) -> Usage:
        """The key's Usage tab, including requests not yet flushed."""
        return Usage._from(self._json(lib.kw_usage_json, self._h(), _text(key_id, "key_id")))

    @_in_flight
    def recent_requests(self, key_id: str) -> List[RecentRequest]:
        """The key's last verifications, newest first (at most 50): time,
        client address, integration, result and reason, whether an old
        secret was presented, the scope asked for. Includes requests not
        yet flushed; another process's appear once it flushes."""
        rows = self._json(lib.kw_recent_requests_json, self._h(), _text(key_id, "key_id"))
        return [RecentRequest._from(r) for r in rows]

    @_in_flight
    def events(
        self,
        since: int = 0,
        limit: int = 1000,
        *,
        key_id: Optional[str] = None,
        owner: Optional[str] = None,
        actor: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        since_time: Optional[datetime] = None,
        until_time: Optional[datetime] = None,
        newest_first: bool = False,
    ) -> List[Event]:
        """Outbox events after sequence number ``since``, oldest first, at
        most ``limit``. With ``key_id``, ``owner``, ``actor``, ``kinds``
        (event kind names, any of them), ``since_time`` (at or after) or
        ``until_time`` (before; aware datetimes), only the events matching
        all of them, found through the outbox's index; ``newest_first``
        turns the order (``since`` still bounds them from below)."""
        if since < 0 or limit < 0:
            raise InvalidInput("since and limit must be non-negative")
        filtered = (key_id, owner, actor, kinds, since_time, until_time) != (None,) * 6
        if not filtered and not newest_first:
            return [Event._from(d) for d in self._json(lib.kw_events_json, self._h(), since, limit)]
        if isinstance(kinds, str):
            raise InvalidInput("kinds is a list of event kind names")
        query: Dict[str, Any] = {"after": since, "newest_first": newest_first}
        for name, value in (("key_id", key_id), ("owner", owner), ("actor", actor)):
            if value is not None:
                query[name] = value
        if kinds is not None:
            query["kinds"] = list(kinds)
        if since_time is not None:
            query["since_time"] = _rfc3339(since_time)
        if until_time is not None:
            query["until_time"] = _rfc3339(until_time)
        found: List[Event] = []
        # Page by page (each examines a bounded number of events) until
        # `limit` are found or there are no more.
        while len(found) < limit:
            query["limit"] = min(limit - len(found), lib.KW_MAX_PAGE)
            page = self._json(lib.kw_events_query_json, self._h(), _text(json.dumps(query), "query"))
            found.extend(Event._from(d) for d in page["events"])
            if page["next"] is None:
                break
            query["before" if newest_first else "after"] = page["next"]
        return found

    # -- plugins ------------------------------------------------------

    @_in_flight
    def install_plugin(
        self,
        component: Union[bytes, str, "os.PathLike[str]"],
        manifest: str,
        *,
        allow_private_network: bool = False,
    ) -> PluginInfo:
        """Installs a notifier plugin: a WebAssembly component (bytes, or a
        path to a .wasm file) and its TOML manifest (text).

        ``allow_private_network`` is an operator's grant: the plugin's calls
        may reach loopback, link-local and private addresses through the
        names its manifest allows (a CRM on an internal network)."""
        if not isinstance(component, (bytes, bytearray)):
            with open(component, "rb") as f:
                component = f.read()
        data = bytes(component)
        options = json.dumps({"allow_private_network": bool(allow_private_network)}).encode()
        out = ffi.new("char **")
        _check(lib.kw_plugin_install_ex(self._h(), data, len(data), _text(manifest, "manifest"), options, out))
        try:
            return PluginInfo._from(json.loads(ffi.string(out[0]).decode()))
        finally:
            lib.kw_string_free(out[0])

    @_in_flight
    def plugins(self) -> List[PluginInfo]:
        return [PluginInfo._from(d) for d in self._json(lib.kw_plugin_list_json, self._h())]

    @_in_flight
    def plugin(self, name: str) -> PluginInfo:
        return PluginInfo._from(self._json(lib.kw_plugin_status_json, self._h(), _text(name, "name")))

    @_in_flight
    def remove_plugin(self, name: str) -> None:
        _check(lib.kw_plugin_remove(self._h(), _text(name, "name")))

    @_in_flight
    def set_plugin_enabled(self, name: str, enabled: bool) -> PluginInfo:
        _check(lib.kw_plugin_set_enabled(self._h(), _text(name, "name"), bool(enabled)))
        return self.plugin(name)

    @_in_flight
    def retry_plugin(self, name: str) -> int:
        """Queues the plugin's dead letters again; returns how many."""
        out = ffi.new("size_t *")
        _check(lib.kw_plugin_retry(self._h(), _text(name, "name"), out))
        return int(out[0])

    @_in_flight
    def dead_letters(self, name: str) -> List[DeadLetter]:
        return [
            DeadLetter(d["seq"], d["kind"], d["error"], d["attempts"], _time(d["at"]), d["requeued"])  # type: ignore[arg-type]
            for d in self._json(lib.kw_plugin_dead_letters_json, self._h(), _text(name, "name"))
        ]

    @_in_flight
    def plugin_log(self, name: str) -> List[str]:
        return list(self._json(lib.kw_plugin_log_json, self._h(), _text(name, "name")))

    @_in_flight
    def flush(self) -> None:
        """Writes pending usage to storage now."""
        _check(lib.kw_store_flush(self._h()))

    def _json(self, fn: Any, *args: Any) -> Any:
        out = ffi.new("char **")
        _check(fn(*args, out))
        try:
            return json.loads(ffi.string(out[0]).decode("utf-8"))
        finally:
            lib.kw_string_free(out[0])


def _key_options(
    owner: Optional[str],
    expires_at: Optional[datetime],
    metadata: Optional[Dict[str, Any]],
    whitelist: Sequence[Tuple[str, str]],
    limits: Sequence[Tuple[str, int, float]],
    quota: Optional[Union[int, Quota]],
    scopes: Sequence[str],
    description: Optional[str],
) -> Dict[str, Any]:
    """The options object of a new key, as the C interface reads it."""
    options: Dict[str, Any] = {}
    if owner is not None:
        options["owner"] = owner
    if expires_at is not None:
        options["expires_at"] = _rfc3339(expires_at)
    if metadata is not None:
        options["metadata"] = metadata
    if whitelist:
        options["whitelist"] = [{"name": n, "network": net} for n, net in whitelist]
    if limits:
        options["limits"] = _limits(limits)
    if quota is not None:
        options["quota"] = _quota_json(quota)
    if scopes:
        options["scopes"] = _scopes(scopes)
    if description is not None:
        options["description"] = description
    return options


def _number(value: object, what: str) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _limits(limits: Sequence[Tuple[str, int, float]]) -> List[Dict[str, Any]]:
    """``[(name, limit, window_seconds), ...]`` as the C interface reads it."""
    if isinstance(limits, (str, bytes)):
        raise InvalidInput("limits must be a list of (name, limit, window_seconds)")
    out = []
    for item in limits:
        if not isinstance(item, tuple) or len(item) != 3:
            raise InvalidInput("each limit is a (name, limit, window_seconds) tuple")
        name, limit, window = item
        if not isinstance(name, str) or not isinstance(limit, int) or isinstance(limit, bool) \
                or not _number(window, "window_seconds"):
            raise InvalidInput("each limit is a (str, int, seconds) tuple")
        out.append({"name": name, "limit": limit, "window_seconds": float(window)})
    return out


def _quota_json(quota: Union[int, Quota]) -> Dict[str, Any]:
    """A quota (a number of requests, or a :class:`Quota`) as the C interface reads it."""
    q = Quota(quota) if isinstance(quota, int) and not isinstance(quota, bool) else quota
    if not isinstance(q, tuple) or not isinstance(q[0], int) or isinstance(q[0], bool):
        raise InvalidInput("quota must be a number of requests or a Quota")
    q = Quota(*q)
    if (q.refill_amount is None) != (q.refill_period is None):
        raise InvalidInput("a refill needs both an amount and a period")
    refill = None
    if q.refill_amount is not None:
        if q.refill_period not in ("daily", "monthly"):
            raise InvalidInput('the refill period is "daily" or "monthly"')
        refill = {"amount": q.refill_amount, "period": q.refill_period}
    return {"remaining": q.remaining, "refill": refill}


def _scopes(scopes: Sequence[str]) -> List[str]:
    if isinstance(scopes, (str, bytes)) or not all(isinstance(s, str) for s in scopes):
        raise InvalidInput("scopes must be a sequence of str")
    return list(scopes)


def _u32(value: int, what: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= 0xFFFFFFFF:
        raise InvalidInput(f"{what} must be an integer from {minimum} to 4294967295")
    return value


def _ip_text(ip: object) -> bytes:
    if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(ip).encode()
    raise InvalidInput(f"ip must be a str or an ipaddress address, not {type(ip).__name__}")

