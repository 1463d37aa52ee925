"""keyward: an embedded API-key store.

Issue API keys to your customers' integrations, verify them in process,
regenerate them (the old secret dies at once or after a grace period),
restrict them to whitelisted IPs, and see where each key is used::

    import keyward

    with keyward.Store("keys.db") as store:
        created = store.create_key("CRM sync")          # created.key: shown once
        verdict = store.verify(created.key, ip="203.0.113.7", integration="hubspot")
        assert verdict
"""

from keyward._errors import (
    InternalError,
    InvalidInput,
    KeywardError,
    NotFound,
    StorageError,
    StoreClosed,
    StoreForked,
    StoreLocked,
)
from keyward._generated import Denial, UsageTotals
from keyward._records import (
    CheckReport,
    CopyReport,
    CreatedKey,
    DeadLetter,
    Event,
    HourlyUsage,
    IntegrationUsage,
    IpUsage,
    KeyInfo,
    KeyPage,
    Limit,
    Metrics,
    PluginInfo,
    PluginMetrics,
    PluginStatus,
    Problem,
    Quota,
    RecentRequest,
    Usage,
    Verdict,
    Whitelist,
    WhitelistEntry,
)
from keyward._store import Store
from keyward._native import ffi as _ffi, lib as _lib

__version__: str = _ffi.string(_lib.kw_version()).decode()

__all__ = [
    "CheckReport",
    "CopyReport",
    "CreatedKey",
    "DeadLetter",
    "PluginInfo",
    "PluginStatus",
    "Problem",
    "Denial",
    "Event",
    "HourlyUsage",
    "IntegrationUsage",
    "InternalError",
    "InvalidInput",
    "IpUsage",
    "KeyInfo",
    "KeyPage",
    "KeywardError",
    "Limit",
    "Metrics",
    "PluginMetrics",
    "Quota",
    "RecentRequest",
    "NotFound",
    "StorageError",
    "Store",
    "StoreClosed",
    "StoreLocked",
    "StoreForked",
    "Usage",
    "UsageTotals",
    "Verdict",
    "Whitelist",
    "WhitelistEntry",
]
