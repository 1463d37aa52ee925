"""What every web integration shares (the WSGI and ASGI middleware, Django
and DRF, FastAPI, Flask): finding the key and the client address in a
request, one verification, and the refusal's answer."""

from __future__ import annotations

import email.message
import ipaddress
import json
import math
import urllib.parse
import urllib.request
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from keyward._generated import HTTP_STATUS
from keyward._store import Store, Verdict

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: What a request must carry: one scope for every request, or a function
#: of the request's method and path giving its scope (``None``: none).
RequiredScope = Union[None, str, Callable[[str, str], Optional[str]]]


def required_scope(required: RequiredScope, method: str, path: str) -> Optional[str]:
    """The scope a request with ``method`` and ``path`` must carry."""
    if required is None or isinstance(required, str):
        return required
    return required(method, path)


def parse_proxies(proxies: Iterable[str]) -> List[Network]:
    """Trusted proxy addresses or networks, e.g. ``["10.0.0.0/8", "127.0.0.1"]``."""
    return [ipaddress.ip_network(p, strict=True) for p in proxies]


def _address(hop: str) -> Optional[ipaddress._BaseAddress]:
    """A hop as an address: ``1.2.3.4``, ``2001:db8::1``, ``1.2.3.4:5678``
    and ``[2001:db8::1]:443`` are addresses (the port is dropped);
    ``unknown``, obfuscated identifiers (``_hidden``) and garbage are not."""
    hop = hop.strip()
    try:
        addr = ipaddress.ip_address(hop)
    except ValueError:
        try:
            parts = urllib.parse.urlsplit("//" + hop)
            parts.port  # raises ValueError for a port that is not one
            host = parts.hostname
            addr = ipaddress.ip_address(host) if host else None
        except ValueError:
            addr = None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr


def _trusted(addr: Optional[ipaddress._BaseAddress], proxies: Sequence[Network]) -> bool:
    return addr is not None and any(addr in net for net in proxies)


def forwarded_hops(values: Iterable[str], header: str) -> List[str]:
    """The hops of every line of the header the proxies set, in arrival
    order: ``X-Forwarded-For`` lists addresses; RFC 7239 ``Forwarded`` lists
    elements whose ``for=`` parameter is the address (a hop without one
    counts as unknown)."""
    hops: List[str] = []
    for value in values:
        for element in urllib.request.parse_http_list(value):
            if header == "x-forwarded-for":
                hops.append(element)
                continue
            params = email.message.Message()
            params["forwarded"] = "element; " + element
            found = dict((k.lower(), v) for k, v in params.get_params(header="forwarded")[1:])
            hops.append(str(found.get("for", "unknown")))
    return [h.strip() for h in hops if h.strip()]


def client_ip(peer: Optional[str], hops: Sequence[str], proxies: Sequence[Network]) -> Optional[str]:
    """The client address: the peer, unless the peer is a trusted proxy; then
    the right-most hop that is not a trusted proxy. None (refused as from an
    unknown client) when that hop is not a plain address."""
    if peer is None:
        return None
    peer_addr = _address(peer)
    if not hops or not proxies or not _trusted(peer_addr, proxies):
        return str(peer_addr) if peer_addr is not None else None
    for hop in reversed(hops):
        addr = _address(hop)
        if not _trusted(addr, proxies):
            return str(addr) if addr is not None else None
    first = _address(hops[0])
    return str(first) if first is not None else None


def header_name(forwarded_header: str) -> str:
    """The forwarding header the proxies set: X-Forwarded-For or Forwarded."""
    name = forwarded_header.strip().lower()
    if name not in ("x-forwarded-for", "forwarded"):
        raise ValueError("forwarded_header must be 'X-Forwarded-For' or 'Forwarded' (RFC 7239)")
    return name


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
    """Status and JSON body for a refused request: 403 for a refused IP or
    a missing scope, 429 when rate-limited or out of quota, 503 when the
    store is busy or unavailable (retry), else 401."""
    if verdict is None:
        return 401, json.dumps({"error": "unauthorized", "reason": reason or "missing_key"}).encode()
    denial = verdict.denial
    status = HTTP_STATUS.get(denial, 401) if denial else 401
    error = {403: "forbidden", 429: "too_many_requests", 503: "unavailable"}.get(status, "unauthorized")
    body = {"error": error, "reason": denial.name.lower() if denial else reason}
    return status, json.dumps(body).encode()


def retry_after(verdict: Optional[Verdict]) -> Optional[str]:
    """Seconds a client should wait before retrying a 503 or a rate-limited
    429 (rounded up, at least 1), as Retry-After."""
    if verdict is None or verdict.denial is None:
        return None
    if verdict.retry_after is not None:
        return str(max(1, math.ceil(verdict.retry_after)))
    return {"BUSY": "1", "UNAVAILABLE": "5"}.get(verdict.denial.name)


REASONS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests", 503: "Service Unavailable"}


class Refusal(NamedTuple):
    """A refused request's answer: status, headers (``WWW-Authenticate`` on
    401, ``Retry-After`` on 429 and 503) and the JSON body
    ``{"error": ..., "reason": ...}``."""

    status: int
    headers: List[Tuple[str, str]]
    body: bytes
    #: The body's reason: a denial's name (``wrong_secret``), or
    #: ``missing_key`` / ``unknown_client`` before any verification.
    reason: str

    @property
    def phrase(self) -> str:
        return REASONS[self.status]

    @property
    def extra_headers(self) -> List[Tuple[str, str]]:
        """The headers but ``Content-Type`` (for a framework that sets it)."""
        return [(n, v) for n, v in self.headers if n.lower() != "content-type"]


def refusal(verdict: Optional[Verdict], reason: Optional[str] = None) -> Refusal:
    """The answer to a request refused with ``verdict`` (or, before any
    verification, for ``reason``: ``missing_key``, ``unknown_client``)."""
    status, body = denial_response(verdict, reason)
    headers = [("Content-Type", "application/json")]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="api"'))
    wait = retry_after(verdict)
    if wait is not None:
        headers.append(("Retry-After", wait))
    denial = verdict.denial if verdict is not None else None
    return Refusal(status, headers, body, denial.name.lower() if denial else (reason or "missing_key"))


class Gate:
    """One request against the store: the key from ``header`` (else
    ``Authorization: Bearer``), the client address (the peer, or the
    right-most hop of ``forwarded_header`` that is not one of
    ``trusted_proxies`` when the peer is one), the User-Agent as the
    integration, and one verification with the scope the endpoint needs.
    ``store`` is a :class:`Store` or a function giving one (opened when
    first needed)."""

    def __init__(
        self,
        store: Union[Store, Callable[[], Store]],
        header: str = "X-API-Key",
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = "X-Forwarded-For",
    ) -> None:
        self._store = store
        self.header = header.strip().lower()
        self.proxies = parse_proxies(trusted_proxies)
        self.forwarded = header_name(forwarded_header)

    @property
    def store(self) -> Store:
        # Anything that verifies is the store; else a function giving it.
        if hasattr(self._store, "verify"):
            return self._store  # type: ignore[return-value]
        return self._store()  # type: ignore[operator]

    def check(
        self,
        header: Callable[[str], Optional[str]],
        forwarded: Sequence[str],
        peer: Optional[str],
        scope: Optional[str] = None,
    ) -> Union[Verdict, Refusal]:
        """The verdict for an admitted request, else the refusal to answer
        with. ``header(name)`` gives a request header (lower-case name) or
        ``None``; ``forwarded`` every line of the forwarding header, in
        arrival order; ``peer`` the address the connection came from."""
        key = presented_key(header(self.header), header("authorization"))
        ip = client_ip(peer, forwarded_hops(forwarded, self.forwarded), self.proxies)
        if key is None or ip is None:
            return refusal(None, "missing_key" if key is None else "unknown_client")
        agent = header("user-agent")
        verdict = (self.store.verify(key, ip, agent, scope=scope) if scope is not None
                   else self.store.verify(key, ip, agent))
        return verdict if verdict else refusal(verdict)
