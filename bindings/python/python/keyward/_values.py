"""Values read from the C library's JSON: times (RFC 3339 in UTC) and the
flat ``Quota`` the package shows a quota as. Imports nothing of the
package (the generated records and the errors import it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, NamedTuple, Optional


def _time(value: Optional[str]) -> Optional[datetime]:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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
