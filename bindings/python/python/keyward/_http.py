"""What the WSGI and ASGI middleware share: finding the key and the client
address in a request, and the denial response."""

from __future__ import annotations

import ipaddress
import json
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from keyward._generated import HTTP_STATUS
from keyward._store import Verdict

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_proxies(proxies: Iterable[str]) -> List[Network]:
    """Trusted proxy addresses or networks, e.g. ``["10.0.0.0/8", "127.0.0.1"]``."""
    return [ipaddress.ip_network(p, strict=True) for p in proxies]


def _trusted(ip: str, proxies: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in proxies)


def client_ip(peer: Optional[str], forwarded_for: Optional[str], proxies: Sequence[Network]) -> Optional[str]:
    """The client address: the peer, unless the peer is a trusted proxy, in
    which case X-Forwarded-For is walked from the right past trusted proxies."""
    if peer is None:
        return None
    if not forwarded_for or not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


def presented_key(api_key_header: Optional[str], authorization: Optional[str]) -> Optional[str]:
    """The key from the configured header, else from ``Authorization: Bearer``."""
    if api_key_header:
        return api_key_header.strip()
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def denial_response(verdict: Optional[Verdict], reason: Optional[str] = None) -> Tuple[int, bytes]:
    """Status and JSON body for a refused request: 403 for a refused IP, else 401."""
    if verdict is None:
        return 401, json.dumps({"error": "unauthorized", "reason": reason or "missing_key"}).encode()
    denial = verdict.denial
    status = HTTP_STATUS.get(denial, 401) if denial else 401
    body = {"error": "forbidden" if status == 403 else "unauthorized", "reason": denial.name.lower() if denial else reason}
    return status, json.dumps(body).encode()


REASONS = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}
