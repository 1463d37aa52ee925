"""The records the Store returns: those the library describes by JSON
Schema (KeyInfo, Usage, Whitelist, PluginInfo, Event, ...) generated into
``_generated``, the package's own (KeyPage, CreatedKey, CheckReport, ...),
and the native Verdict."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from keyward import _fast
from keyward import _generated
from keyward._generated import (
    Denial,
    Event,
    HourlyUsage,
    IntegrationUsage,
    IpUsage,
    KeyInfo,
    Limit,
    Metrics,
    PluginMetrics,
    PluginInfo,
    PluginStatus,
    RecentRequest,
    UsageTotals,
    Whitelist,
    WhitelistEntry,
)
from keyward._errors import InvalidInput
from keyward._values import Quota, _time

_UTC = timezone.utc


def _known(cls: Any, d: Dict[str, Any]) -> Any:
    """``cls(**d)`` with only the fields ``cls`` has: a newer library may add fields."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _rfc3339(value: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC, to the millisecond."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"expected a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidInput(
            "naive datetime: pass a timezone-aware one (such as datetime.now(timezone.utc)); "
            "keyward does not guess which zone a time is in"
        )
    try:
        utc = value.astimezone(timezone.utc)
    except (OverflowError, ValueError) as e:
        raise InvalidInput(f"{value!r} is out of range: {e}") from None
    return utc.isoformat(timespec="milliseconds")


# ---------------------------------------------------------------- records


_DENIALS = {d.value: d for d in Denial}


def _datetime_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, _UTC)


_fast.bind(tuple(_DENIALS.get(n) for n in range(max(_DENIALS) + 1)), _datetime_ms)

#: The answer of :meth:`Store.verify`, true when the key was admitted:
#: ``valid``, ``denial`` (a :class:`Denial` or ``None``), ``key_id``,
#: ``generation``, ``in_grace``, ``rotated_at`` (for ``ROTATED``) and
#: ``owner`` (the key's account, also on refusals whenever the key exists),
#: ``retry_after`` (seconds until one more request fits, for
#: ``RATE_LIMITED``; else ``None``) and ``scopes`` (the admitted key's
#: scopes, a tuple). ``Verdict(valid, denial, key_id, generation,
#: in_grace=False, rotated_at=None, owner=None, retry_after=None,
#: scopes=())``. Built natively by ``Store.verify``.
Verdict = _fast.Verdict


@dataclass(frozen=True)
class KeyPage:
    """One page of :meth:`Store.key_page`, in id order: ``keys``, and
    ``next`` to pass as ``after`` for the next page (``None`` on the last)."""

    keys: List[KeyInfo]
    next: Optional[str]


@dataclass(frozen=True)
class CreatedKey:
    """A key as created or regenerated: the plaintext ``key`` (shown once) and its info."""

    key: str = field(repr=False)
    info: KeyInfo

    def __repr__(self) -> str:
        return f"CreatedKey(key='{self.info.masked} [redacted]', info={self.info!r})"


@dataclass(frozen=True)
class Problem:
    """One thing :meth:`Store.check` found that does not agree."""

    table: str
    row: str
    problem: str
    repaired: bool


@dataclass(frozen=True)
class CheckReport:
    """What :meth:`Store.check` found: ``clean`` when nothing is wrong that
    was not repaired; rows read by table; each problem."""

    clean: bool
    rows: Dict[str, int]
    problems: List[Problem]

    def __bool__(self) -> bool:
        return self.clean

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "CheckReport":
        return cls(d["clean"], dict(d["rows"]), [Problem(**p) for p in d["problems"]])


@dataclass(frozen=True)
class CopyReport:
    """What :meth:`Store.backup` or :meth:`Store.copy_to` wrote: keys, rows
    and bytes; ``last_event``, the newest event the copy holds (its next is
    numbered after it); ``journaled``, the rows written while the store was
    read, applied after so the copy is one consistent snapshot."""

    keys: int
    rows: int
    bytes: int
    last_event: int
    journaled: int


class Usage(_generated.Usage):
    """The Usage tab of one key."""

    @property
    def stale_clients(self) -> List[IpUsage]:
        """Client IPs whose latest request presented an old secret."""
        return [ip for ip in self.ips if ip.stale_secret]


@dataclass(frozen=True)
class DeadLetter:
    """An event a plugin could not take after all its attempts."""

    seq: int
    kind: str
    error: str
    attempts: int
    at: datetime
    requeued: bool
