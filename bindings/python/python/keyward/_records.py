"""The records the Store returns (KeyInfo, Usage, Event, ...), read from
the C library's JSON, and the native Verdict."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from keyward import _fast
from keyward._errors import InvalidInput
from keyward._generated import Denial, UsageTotals

_UTC = timezone.utc


def _known(cls: Any, d: Dict[str, Any]) -> Any:
    """``cls(**d)`` with only the fields ``cls`` has: a newer library may add fields."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _time(value: Optional[str]) -> Optional[datetime]:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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


class Limit(NamedTuple):
    """A rate limit: at most ``limit`` requests at once, refilling evenly
    over ``window_seconds`` (GCRA)."""

    name: str
    limit: int
    window_seconds: float


class Quota(NamedTuple):
    """A quota: ``remaining`` requests, reset to ``refill_amount`` at 00:00
    UTC each day or on the 1st of each month (``refill_period``
    ``"daily"``/``"monthly"``), or never (both ``None``)."""

    remaining: int
    refill_amount: Optional[int] = None
    refill_period: Optional[str] = None


def _quota(d: Optional[Dict[str, Any]]) -> Optional[Quota]:
    if d is None:
        return None
    refill = d.get("refill")
    if refill is None:
        return Quota(d["remaining"])
    return Quota(d["remaining"], refill["amount"], refill["period"])


@dataclass(frozen=True)
class KeyInfo:
    """The Overview of one key. Holds no secret."""

    id: str
    name: str
    masked: str
    created_at: datetime
    rotated_at: Optional[datetime]
    last_used_at: Optional[datetime]
    generation: int
    disabled: bool
    expires_at: Optional[datetime]
    whitelist_enabled: bool
    grace_until: Optional[datetime]
    metadata: Optional[Dict[str, Any]]
    owner: Optional[str] = None
    limits: List[Limit] = field(default_factory=list)
    quota: Optional[Quota] = None
    scopes: Tuple[str, ...] = ()

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "KeyInfo":
        return cls(
            id=d["id"],
            name=d["name"],
            masked=d["masked"],
            created_at=_time(d["created_at"]),  # type: ignore[arg-type]
            rotated_at=_time(d["rotated_at"]),
            last_used_at=_time(d["last_used_at"]),
            generation=d["generation"],
            disabled=d["disabled"],
            expires_at=_time(d["expires_at"]),
            whitelist_enabled=d["whitelist_enabled"],
            grace_until=_time(d["grace_until"]),
            metadata=d["metadata"],
            owner=d.get("owner"),
            limits=[Limit(x["name"], x["limit"], x["window_seconds"]) for x in d.get("limits", [])],
            quota=_quota(d.get("quota")),
            scopes=tuple(d.get("scopes", ())),
        )


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
class WhitelistEntry:
    id: str
    name: str
    network: str
    created_at: datetime

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "WhitelistEntry":
        return cls(d["id"], d["name"], d["network"], _time(d["created_at"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Whitelist:
    enabled: bool
    entries: List[WhitelistEntry]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Whitelist":
        return cls(d["enabled"], [WhitelistEntry._from(e) for e in d["entries"]])


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


@dataclass(frozen=True)
class IpUsage:
    ip: str
    first_seen: datetime
    last_seen: datetime
    allowed: int
    denied: int
    last_integration: Optional[str]
    stale_secret: bool


@dataclass(frozen=True)
class IntegrationUsage:
    name: str
    first_seen: datetime
    last_seen: datetime
    count: int
    denied: int
    ips: List[str]
    stale_secret: bool


@dataclass(frozen=True)
class HourlyUsage:
    hour: datetime
    allowed: int
    denied: int
    #: Of those denied, the rate-limited and out-of-quota ones.
    limited: int = 0


@dataclass(frozen=True)
class Usage:
    """The Usage tab of one key."""

    key_id: str
    totals: UsageTotals
    last_used_at: Optional[datetime]
    last_used_ip: Optional[str]
    ips: List[IpUsage]
    integrations: List[IntegrationUsage]
    hourly: List[HourlyUsage]

    @property
    def stale_clients(self) -> List[IpUsage]:
        """Client IPs whose latest request presented an old secret."""
        return [ip for ip in self.ips if ip.stale_secret]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Usage":
        last = d["last_used"]
        return cls(
            key_id=d["key_id"],
            totals=_known(UsageTotals, d["totals"]),
            last_used_at=_time(last["at"]) if last else None,
            last_used_ip=last["ip"] if last else None,
            ips=[
                IpUsage(
                    ip=r["ip"],
                    first_seen=_time(r["first_seen"]),  # type: ignore[arg-type]
                    last_seen=_time(r["last_seen"]),  # type: ignore[arg-type]
                    allowed=r["allowed"],
                    denied=r["denied"],
                    last_integration=r["last_integration"],
                    stale_secret=r["stale_secret"],
                )
                for r in d["ips"]
            ],
            integrations=[
                IntegrationUsage(
                    name=r["name"],
                    first_seen=_time(r["first_seen"]),  # type: ignore[arg-type]
                    last_seen=_time(r["last_seen"]),  # type: ignore[arg-type]
                    count=r["count"],
                    denied=r["denied"],
                    ips=list(r["ips"]),
                    stale_secret=r["stale_secret"],
                )
                for r in d["integrations"]
            ],
            hourly=[
                HourlyUsage(_time(h["hour"]), h["allowed"], h["denied"], h.get("limited", 0))  # type: ignore[arg-type]
                for h in d["hourly"]
            ],
        )


@dataclass(frozen=True)
class Event:
    """One entry of the event outbox."""

    seq: int
    kind: str
    at: datetime
    key_id: str
    name: str
    masked: str
    data: Dict[str, Any]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Event":
        return cls(d["seq"], d["kind"], _time(d["at"]), d["key_id"], d["name"], d["masked"], d["data"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class PluginStatus:
    """Delivery state of one plugin."""

    cursor: int
    pending: int
    delivered: int
    failed: int
    dead_letters: int
    attempts: int
    next_attempt_at: Optional[datetime]
    last_error: Optional[str]
    last_error_at: Optional[datetime]
    last_success_at: Optional[datetime]


@dataclass(frozen=True)
class PluginInfo:
    """An installed notifier plugin and how its deliveries are going."""

    name: str
    version: str
    api: str
    events: List[str]
    allowed_hosts: List[str]
    enabled: bool
    installed_at: datetime
    status: PluginStatus
    allow_private_network: bool = False

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "PluginInfo":
        st = dict(d["status"])
        for k in ("next_attempt_at", "last_error_at", "last_success_at"):
            st[k] = _time(st[k])
        return cls(
            name=d["name"],
            version=d["version"],
            api=d["api"],
            events=list(d["events"]),
            allowed_hosts=list(d["allowed_hosts"]),
            allow_private_network=bool(d.get("allow_private_network", False)),
            enabled=d["enabled"],
            installed_at=_time(d["installed_at"]),  # type: ignore[arg-type]
            status=_known(PluginStatus, st),
        )


@dataclass(frozen=True)
class DeadLetter:
    """An event a plugin could not take after all its attempts."""

    seq: int
    kind: str
    error: str
    attempts: int
    at: datetime
    requeued: bool
