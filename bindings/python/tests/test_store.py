"""The Store API: every method, every error class, threads, processes, and
a store shared with the Rust API."""

import gc
import ipaddress
import multiprocessing
import os
import threading
from datetime import datetime, timedelta, timezone

import pytest

import keyward
from keyward import Denial

from conftest import CHEAP
from polling import eventually


def test_create_verify_and_the_overview(store):
    created = store.create_key("CRM sync", metadata={"customer": "acme"})
    assert created.key.startswith(f"kw_{created.info.id}_")
    assert len(created.key) == 2 + 1 + 12 + 1 + 43 + 6
    assert created.key not in repr(created), "repr never shows the key"
    info = created.info
    assert (info.name, info.generation, info.disabled, info.whitelist_enabled) == ("CRM sync", 1, False, False)
    assert info.masked == f"kw_{info.id}_\u2026{created.key[-4:]}"
    assert info.created_at.tzinfo is not None and info.last_used_at is None
    assert info.metadata == {"customer": "acme"}

    v = store.verify(created.key, ip="203.0.113.7", integration="hubspot")
    assert v and v.valid and v.denial is None
    assert (v.key_id, v.generation, v.in_grace) == (info.id, 1, False)
    assert store.key(info.id).last_used_at is not None
    assert [k.id for k in store.keys()] == [info.id]


def test_verdicts_for_each_denial(store):
    c = store.create_key("k")
    assert store.verify("nonsense", "10.0.0.1").denial is Denial.MALFORMED
    assert store.verify(b"\xff\xfe", "10.0.0.1").denial is Denial.MALFORMED
    assert store.verify("k" * (1 << 20), "10.0.0.1").denial is Denial.MALFORMED
    assert not store.verify("", "10.0.0.1")
    store.set_disabled(c.info.id, True)
    assert store.verify(c.key, "10.0.0.1").denial is Denial.DISABLED
    store.set_disabled(c.info.id, False)
    store.set_expiry(c.info.id, datetime(2001, 1, 1, tzinfo=timezone.utc))
    assert store.verify(c.key, "10.0.0.1").denial is Denial.EXPIRED
    store.set_expiry(c.info.id, None)
    assert store.verify(c.key, "::ffff:10.0.0.1")
    other = store.create_key("other")
    store.delete(other.info.id)
    v = store.verify(other.key, "10.0.0.1")
    assert v.denial is Denial.UNKNOWN_KEY and v.key_id == other.info.id
    assert {d.name for d in Denial} == {
        "MALFORMED", "UNKNOWN_KEY", "WRONG_SECRET", "ROTATED", "EXPIRED", "DISABLED", "IP_NOT_ALLOWED", "BUSY",
        "UNAVAILABLE", "RATE_LIMITED", "QUOTA_EXHAUSTED", "SCOPE_MISSING",
    }
    assert [d.value for d in Denial] == list(range(1, 13)), "same numbers as kw_denial"


def test_the_native_verify_answers_as_the_c_interface_does(store):
    """Store.verify answers text addresses in one native call and takes
    everything else (address objects, bad input) the general way through
    kw_verify: both give equal verdicts, and bad input the same errors."""
    owned = store.create_key("owned", owner="acct_1", whitelist=[("office", "10.0.0.0/8")])
    rotated = store.create_key("rotated")
    store.regenerate(rotated.info.id)
    disabled = store.create_key("disabled")
    store.set_disabled(disabled.info.id, True)
    gone = store.create_key("gone")
    store.delete(gone.info.id)
    wrong = owned.key[:-10] + ("A" if owned.key[-10] != "A" else "B") + owned.key[-9:]
    scoped = store.create_key("scoped", scopes=["orders:read", "a:b"])
    cases = [owned.key, owned.key.encode(), rotated.key, disabled.key, gone.key, wrong, "nonsense", "",
             scoped.key]
    for key in cases:
        for ip in ("10.1.2.3", "192.0.2.1", "::1"):
            for integration in (None, "crm"):
                for scope in (None, "orders:read", "orders:write"):
                    native = store.verify(key, ip, integration, scope=scope)
                    general = store.verify(key, ipaddress.ip_address(ip), integration, scope=scope)
                    assert type(native) is keyward.Verdict
                    assert native == general, (key, ip, integration, scope)
                    assert repr(native) == repr(general)
    assert store.verify(scoped.key, "10.1.2.3", scope="a:b").scopes == ("a:b", "orders:read")
    # One request an hour: both ways refuse the next with its retry_after.
    hourly = store.create_key("hourly", limits=[("burst", 1, 3600)])
    assert store.verify(hourly.key, "10.1.2.3")
    native = store.verify(hourly.key, "10.1.2.3")
    general = store.verify(hourly.key, ipaddress.ip_address("10.1.2.3"))
    assert native.denial is general.denial is Denial.RATE_LIMITED
    # (Counted in parts of the hour: it leaves the window within 3600 s and
    # one part, 117 s, of its arrival.)
    assert 3590 < general.retry_after <= native.retry_after <= 3717
    assert store.verify(owned.key, "10.1.2.3").owner == "acct_1"
    assert store.verify(owned.key, "192.0.2.1").denial is Denial.IP_NOT_ALLOWED
    assert store.verify(rotated.key, "10.1.2.3").rotated_at.tzinfo is not None
    for bad_ip in ("10.0.0.300", "10.0.0.1\0", "", 42):
        with pytest.raises(keyward.InvalidInput):
            store.verify(owned.key, bad_ip)
    with pytest.raises(keyward.InvalidInput):
        store.verify(owned.key, "10.1.2.3", "crm\0")
    # A key with a lone surrogate is not text the engine reads: malformed.
    assert store.verify("kw_\udc80", "10.1.2.3").denial is Denial.MALFORMED


def test_regenerate_now_and_with_grace(store):
    c = store.create_key("k")
    assert store.verify(c.key, "10.0.0.1")
    fresh = store.regenerate(c.info.id)
    assert fresh.info.id == c.info.id and fresh.info.generation == 2
    v = store.verify(c.key, "10.0.0.1")
    assert v.denial is Denial.ROTATED and v.rotated_at is not None and v.rotated_at.tzinfo is not None
    assert store.verify(fresh.key, "10.0.0.1").generation == 2

    graced = store.regenerate(c.info.id, grace=timedelta(hours=1))
    assert graced.info.grace_until is not None
    v = store.verify(fresh.key, "10.0.0.9", integration="zapier")
    assert v and v.in_grace and v.generation == 2
    assert store.verify(graced.key, "10.0.0.1").generation == 3
    assert [ip.ip for ip in store.usage(c.info.id).stale_clients] == ["10.0.0.9"]
    store.regenerate(c.info.id, grace=0)
    assert not store.verify(graced.key, "10.0.0.1")
    with pytest.raises(keyward.InvalidInput):
        store.regenerate(c.info.id, grace=-1)
    with pytest.raises(keyward.InvalidInput):
        store.regenerate(c.info.id, grace=timedelta(days=400))


def test_expiry_in_any_zone_is_the_same_instant(store):
    tokyo = timezone(timedelta(hours=9))
    when = datetime(2030, 1, 2, 12, 0, 0, 500000, tzinfo=tokyo)
    c = store.create_key("k", expires_at=when)
    assert c.info.expires_at == when
    assert c.info.expires_at.utcoffset() == timedelta(0)
    assert c.info.expires_at.hour == 3
    later = datetime(2031, 6, 1, 8, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert store.set_expiry(c.info.id, later).expires_at == later
    with pytest.raises(keyward.InvalidInput, match="naive"):
        store.set_expiry(c.info.id, datetime(2030, 1, 1))


def test_updates(store):
    c = store.create_key("before")
    assert store.rename(c.info.id, "after").name == "after"
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert store.set_expiry(c.info.id, when).expires_at == when
    assert store.set_metadata(c.info.id, {"plan": "pro"}).metadata == {"plan": "pro"}
    assert store.set_metadata(c.info.id, None).metadata is None
    assert store.set_disabled(c.info.id, True).disabled


def test_update_changes_every_given_setting_at_once_or_none(store):
    made = store.create_key("before", owner="acme", metadata={"plan": "free"})
    key_id = made.info.id
    last = store.events()[-1].seq
    # One invalid setting: nothing changes, no event is written.
    for bad in ({"name": "renamed", "owner": ""}, {"disabled": True, "name": ""},
                {"name": "renamed", "scopes": ["no spaces"]}, {"disabled": "yes"},
                {"name": None}, {"metadata": {"not": {1, 2}}}):
        with pytest.raises(keyward.InvalidInput):
            store.update(key_id, **bad)
        assert store.key(key_id) == made.info, bad
    assert store.events()[-1].seq == last
    at = datetime(2100, 1, 1, tzinfo=timezone.utc)
    info = store.update(key_id, name="after", disabled=True, expires_at=at, metadata=None,
                        owner="globex", scopes=["orders:read"], limits=[("burst", 5, 10)],
                        quota=7, whitelist_enabled=True)
    assert (info.name, info.disabled, info.expires_at, info.metadata, info.owner) == (
        "after", True, at, None, "globex")
    assert info.scopes == ("orders:read",) or list(info.scopes) == ["orders:read"]
    assert info.whitelist_enabled and info.quota.remaining == 7 and len(info.limits) == 1
    assert store.verify(made.key, "198.51.100.1").denial is Denial.DISABLED
    kinds = [e.kind for e in store.events(last)]
    assert kinds == ["key.updated"] * 8 + ["whitelist.updated"], kinds
    # Left out: kept; None: cleared.
    info = store.update(key_id, disabled=False, owner=None, quota=None, expires_at=None)
    assert (info.name, info.disabled, info.owner, info.quota, info.expires_at) == (
        "after", False, None, None, None)
    assert store.verify(made.key, "198.51.100.1").denial is Denial.IP_NOT_ALLOWED
    with pytest.raises(keyward.NotFound):
        store.update("AAAAAAAAAAAA", disabled=True)


def test_a_description_is_given_at_creation_or_import_changed_and_cleared(store):
    made = store.create_key("crm", description="HubSpot sync for the EU team")
    assert made.info.description == "HubSpot sync for the EU team"
    assert store.key(made.info.id).description == "HubSpot sync for the EU team"
    assert store.update(made.info.id, description="EU sync").description == "EU sync"
    assert store.update(made.info.id, name="crm2").description == "EU sync"
    assert store.update(made.info.id, description=None).description is None
    with pytest.raises(keyward.InvalidInput):
        store.update(made.info.id, description="d" * 1025)
    imported = store.import_key("legacy", plaintext="legacy-key-0123456789abcdef", description="from the old system")
    assert imported.description == "from the old system"


def test_whitelist(store):
    c = store.create_key("k", whitelist=[("office", "198.51.100.0/24")])
    wl = store.whitelist(c.info.id)
    assert wl.enabled and [(e.name, e.network) for e in wl.entries] == [("office", "198.51.100.0/24")]
    assert store.verify(c.key, "198.51.100.4")
    assert store.verify(c.key, "203.0.113.1").denial is Denial.IP_NOT_ALLOWED
    entry = store.add_whitelist_entry(c.info.id, "CRM", "203.0.113.1")
    assert (entry.name, entry.network) == ("CRM", "203.0.113.1") and entry.created_at.tzinfo
    assert store.verify(c.key, "203.0.113.1")
    store.remove_whitelist_entry(c.info.id, entry.id)
    assert not store.verify(c.key, "203.0.113.1")
    assert not store.set_whitelist_enabled(c.info.id, False).enabled
    assert store.verify(c.key, "203.0.113.1")
    with pytest.raises(keyward.InvalidInput, match="10.0.0.0/8"):
        store.add_whitelist_entry(c.info.id, "x", "10.0.0.1/8")
    with pytest.raises(keyward.NotFound):
        store.remove_whitelist_entry(c.info.id, "nope")


def test_usage_and_events(store):
    c = store.create_key("k")
    for _ in range(3):
        assert store.verify(c.key, "10.0.0.1", integration="n8n")
    store.flush()
    u = store.usage(c.info.id)
    assert u.key_id == c.info.id
    assert (u.totals.allowed, u.totals.denied) == (3, 0)
    assert u.last_used_ip == "10.0.0.1" and u.last_used_at.tzinfo is not None
    assert [(i.ip, i.allowed, i.last_integration) for i in u.ips] == [("10.0.0.1", 3, "n8n")]
    assert [(i.name, i.count, i.ips) for i in u.integrations] == [("n8n", 3, ["10.0.0.1"])]
    assert sum(h.allowed for h in u.hourly) == 3
    store.regenerate(c.info.id)
    events = store.events()
    assert [e.kind for e in events] == ["key.created", "key.regenerated"]
    assert store.events(since=events[0].seq) == events[1:]
    assert c.key[16:59] not in repr(events)


def test_event_queries(tmp_path):
    path = str(tmp_path / "audit")
    ids = {}
    for actor in ("alice", "bob"):
        with keyward.Store(path, argon2=CHEAP, actor=actor) as s:
            for owner in ("acme", "globex"):
                c = s.create_key(f"{owner} by {actor}", owner=owner)
                s.update(c.info.id, name=f"{owner} by {actor} (renamed)")
                ids[(owner, actor)] = c.info.id
    with keyward.Store(path, argon2=CHEAP) as store:
        every = store.events()
        assert len(every) == 8
        acme = store.events(owner="acme")
        assert [e.seq for e in acme] == [e.seq for e in every if e.data.get("owner") == "acme"]
        assert {e.data["actor"] for e in store.events(actor="bob")} == {"bob"}
        assert len(store.events(actor="bob")) == 4
        one = store.events(key_id=ids[("globex", "alice")], kinds=["key.updated"])
        assert [(e.kind, e.data["actor"]) for e in one] == [("key.updated", "alice")]
        newest = store.events(owner="acme", newest_first=True, limit=3)
        assert [e.seq for e in newest] == [e.seq for e in reversed(acme)][:3]
        assert store.events(since=acme[1].seq, owner="acme") == acme[2:]
        later = every[4].at
        assert store.events(since_time=later) == [e for e in every if e.at >= later]
        assert store.events(until_time=later) == [e for e in every if e.at < later]
        assert store.events(owner="nobody") == []
        for bad in (dict(kinds=["key.exploded"]), dict(kinds="key.created"),
                    dict(since_time=datetime(2030, 1, 1)), dict(key_id="not an id")):
            with pytest.raises(keyward.InvalidInput):
                store.events(**bad)


def test_recent_requests(store):
    c = store.create_key("k", scopes=["orders:read"])
    assert store.verify(c.key, "10.0.0.1", integration="n8n")
    assert not store.verify(c.key, "10.0.0.2", scope="orders:write")
    store.regenerate(c.info.id)  # the old secret is refused from now on
    for _ in range(200):
        assert not store.verify(c.key, "10.0.0.3")
    recent = store.recent_requests(c.info.id)
    assert len(recent) == 50, "the newest 50, whatever the traffic"
    assert all(r.ip == "10.0.0.3" and not r.allowed and r.reason == "rotated" for r in recent)
    store.flush()
    assert store.recent_requests(c.info.id) == recent
    other = store.create_key("other", scopes=["orders:read"])
    assert store.verify(other.key, "10.0.0.1", integration="n8n")
    assert not store.verify(other.key, "10.0.0.2", scope="orders:write")
    first, second = reversed(store.recent_requests(other.info.id))
    assert (first.ip, first.integration, first.allowed, first.reason) == ("10.0.0.1", "n8n", True, None)
    assert first.at.tzinfo is not None and not first.stale_secret
    assert (second.allowed, second.reason, second.scope) == (False, "scope_missing", "orders:write")
    with pytest.raises(keyward.NotFound):
        store.recent_requests("AAAAAAAAAAAA")
    with pytest.raises(keyward.InvalidInput):
        store.recent_requests("not an id")


def test_every_error_class(store, store_path, tmp_path):
    with pytest.raises(keyward.NotFound):
        store.key("AAAAAAAAAAAA")
    with pytest.raises(keyward.NotFound):
        store.delete("AAAAAAAAAAAA")
    for bad in (lambda: store.key("not an id"), lambda: store.create_key(""),
                lambda: store.create_key("nul\0name"), lambda: store.create_key("x" * 1000),
                lambda: store.create_key("k", metadata=[1]),
                lambda: store.create_key("k", expires_at=datetime(2030, 1, 1)),
                lambda: store.verify("k", "not-an-ip"), lambda: store.verify("k", "10.0.0.1\0"),
                lambda: store.events(since=-1)):
        with pytest.raises(keyward.InvalidInput):
            bad()
    with pytest.raises(keyward.InvalidInput):
        keyward.Store(str(tmp_path / "other"), prefix="Bad-Prefix")
    with pytest.raises(keyward.InvalidInput):
        keyward.Store(str(tmp_path / "other"), argon2={"memory_kib": 1})
    with pytest.raises(keyward.InvalidInput):
        keyward.Store(str(tmp_path / "other"), argon2={"lanes": 1})
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(keyward.StorageError):
        keyward.Store(str(tmp_path / "a-file" / "store"))
    for cls in (keyward.InvalidInput, keyward.NotFound, keyward.StoreLocked, keyward.StorageError,
                keyward.StoreClosed, keyward.InternalError):
        assert issubclass(cls, keyward.KeywardError)


def test_use_after_close_raises_and_close_is_idempotent(store_path):
    s = keyward.Store(store_path, argon2=CHEAP)
    c = s.create_key("k")
    s.close()
    s.close()
    assert s.closed
    for call in (lambda: s.verify(c.key, "10.0.0.1"), lambda: s.keys(), lambda: s.create_key("x"),
                 lambda: s.usage(c.info.id), lambda: s.flush()):
        with pytest.raises(keyward.StoreClosed):
            call()
    with keyward.Store(store_path, argon2=CHEAP) as again:
        assert again.verify(c.key, "10.0.0.1")


def test_a_forgotten_store_is_closed_by_its_finaliser(store_path):
    s = keyward.Store(store_path, argon2=CHEAP)
    key = s.create_key("k").key
    s.verify(key, "10.0.0.1")
    del s
    gc.collect()
    with keyward.Store(store_path) as again:  # the lock was released
        info = again.keys()[0]
        assert again.usage(info.id).totals.allowed == 1, "usage was flushed"


# Past generations a store remembers (keyward::PAST_GENERATIONS_KEPT): an
# older secret answers ROTATED, and only one older than that WRONG_SECRET.
PAST_GENERATIONS_KEPT = 8


def test_threads_verify_while_another_regenerates(store):
    c = store.create_key("hot")
    state = {"current": (1, c.key), "revoked": None}
    lock = threading.Lock()
    done = threading.Event()
    failures = []

    def superseded_ok(v, generation):
        """A refusal of a secret that was current at `generation`."""
        with lock:
            newest = state["current"][0]
        if v.denial is Denial.ROTATED:
            return True
        return v.denial is Denial.WRONG_SECRET and newest - generation > PAST_GENERATIONS_KEPT

    def verifier(ip):
        while not done.is_set():
            with lock:
                current, revoked = state["current"], state["revoked"]
            if revoked:
                v = store.verify(revoked[1], ip)
                if v or not superseded_ok(v, revoked[0]):
                    failures.append(("revoked", revoked[0], v))
            v = store.verify(current[1], ip)
            if not v and not superseded_ok(v, current[0]):
                failures.append(("current", current[0], v))

    threads = [threading.Thread(target=verifier, args=(f"10.0.0.{i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for _ in range(30):
        fresh = store.regenerate(c.info.id)
        with lock:
            state["revoked"] = state["current"]
            state["current"] = (fresh.info.generation, fresh.key)
    done.set()
    for t in threads:
        t.join()
    assert failures == []
    assert store.key(c.info.id).generation == 31


def _try_open(path, queue, require_owner):
    try:
        with keyward.Store(path, require_owner=require_owner) as s:
            st = s.status()
            queue.put(f"opened {st['role']} {st['owner_pid']}")
    except keyward.StoreLocked as e:
        queue.put(f"locked: {e} {e.status}")


def test_a_second_process_attaches_unless_it_must_own(store, store_path):
    assert store.status()["role"] == "owner" and store.status()["owner_pid"] == os.getpid()
    ctx = multiprocessing.get_context("spawn")
    for require_owner, expected in ((False, f"opened attached {os.getpid()}"), (True, "locked: ")):
        queue = ctx.Queue()
        p = ctx.Process(target=_try_open, args=(store_path, queue, require_owner))
        p.start()
        answer = queue.get(timeout=60)
        p.join(timeout=60)
        assert answer.startswith(expected), answer
    assert store_path in answer and answer.endswith(" 200")


def test_a_store_is_shared_with_the_rust_api(store_path, store_tool):
    with keyward.Store(store_path) as s:
        from_python = s.create_key("made in Python")
    assert store_tool(store_path, "verify", from_python.key, "10.0.0.1") == f"valid {from_python.info.id} 1\n"
    out = store_tool(store_path, "create", "made in Rust")
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    with keyward.Store(store_path) as s:
        v = s.verify(lines["key"], "10.0.0.1")
        assert v and v.key_id == lines["id"]
        assert {k.name for k in s.keys()} == {"made in Python", "made in Rust"}
        assert s.usage(from_python.info.id).integrations[0].name == "store_tool"


def test_import_each_kind_and_verify_the_legacy_string(store):
    import hashlib

    plain = store.import_key("plain", plaintext="sk_live_py_legacy_0001", owner="acct_py")
    assert plain.name == "plain" and plain.owner == "acct_py"
    v = store.verify("sk_live_py_legacy_0001", "10.0.0.1")
    assert v and v.key_id == plain.id and v.owner == "acct_py"
    digest = hashlib.sha256(b"legacy-py-sha").hexdigest()
    sha = store.import_key("sha", sha256=digest, whitelist=[("lan", "10.0.0.0/8")])
    assert store.verify("legacy-py-sha", "10.0.0.1").key_id == sha.id
    assert store.verify("legacy-py-sha", "192.0.2.1").denial is Denial.IP_NOT_ALLOWED
    bcrypt_hash = "$2b$04$ZJrW4aSBBZsUQyhTPKel2OarUOSJT.MyEfHkjUq46gFArkG.mAn9i"
    ph = store.import_key("bcrypt", phc=bcrypt_hash, prefix="CKEY0001")
    assert store.verify("CKEY0001.the-rest-of-the-c-key", "10.0.0.1").key_id == ph.id
    wrong = store.verify("CKEY0001.wrong", "10.0.0.1")
    assert wrong.denial is Denial.WRONG_SECRET and wrong.key_id == ph.id
    assert store.verify("sk_live_py_legacy_0002", "10.0.0.1").denial is Denial.MALFORMED
    with pytest.raises(keyward.InvalidInput):
        store.import_key("again", plaintext="sk_live_py_legacy_0001")
    with pytest.raises(keyward.InvalidInput):
        store.import_key("none")
    with pytest.raises(keyward.InvalidInput):
        store.import_key("two", plaintext="a-key", sha256=digest)
    with pytest.raises(keyward.InvalidInput):
        store.import_key("no prefix", phc=bcrypt_hash)
    with pytest.raises(keyward.InvalidInput) as e:
        store.import_key("bad", sha256="topsecret-not-hex")
    assert "topsecret" not in str(e.value)
    # Regenerating gives a key of this store's format.
    fresh = store.regenerate(plain.id)
    assert fresh.key.startswith(f"kw_{plain.id}_") and store.verify(fresh.key, "10.0.0.1")
    assert store.verify("sk_live_py_legacy_0001", "10.0.0.1").denial is Denial.ROTATED


def _settled(store, key, scope=None):
    """Verifies until the answer is not BUSY (a lease on its way), failing
    after a deadline."""

    def answer():
        v = store.verify(key, "203.0.113.5", scope=scope)
        return None if v.denial is Denial.BUSY else v

    return eventually("an answer other than BUSY", answer, within=10)


def test_rate_limits_refuse_a_burst_with_retry_after_and_admit_after_it(store):
    old = store.create_key("limited", limits=[("burst", 3, 1.5), ("daily", 10000, 86400)])
    assert old.info.limits == [keyward.Limit("burst", 3, 1.5), keyward.Limit("daily", 10000, 86400.0)]
    c = store.regenerate(old.info.id)
    # An old secret and a missing scope spend nothing.
    for _ in range(20):
        assert store.verify(old.key, "203.0.113.5").denial is Denial.ROTATED
        assert store.verify(c.key, "203.0.113.5", scope="x").denial is Denial.SCOPE_MISSING
    for _ in range(3):
        assert store.verify(c.key, "203.0.113.5")
    refused = store.verify(c.key, "203.0.113.5")
    assert refused.denial is Denial.RATE_LIMITED and not refused
    assert 1.4 < refused.retry_after <= 1.55
    assert "retry_after=" in repr(refused)
    eventually("admitted again", lambda: store.verify(c.key, "203.0.113.5").valid, within=10)
    totals = store.usage(c.info.id).totals
    assert totals.rate_limited >= 1 and totals.scope_missing == 20 and totals.rotated == 20
    assert sum(h.limited for h in store.usage(c.info.id).hourly) == totals.rate_limited
    info = store.set_limits(c.info.id, [("burst", 1, 60)])
    assert info.limits == [keyward.Limit("burst", 1, 60.0)]
    assert store.set_limits(c.info.id, []).limits == []
    for bad in ([("x", 0, 1)], [("x", 1)], [("", 1, 1)], [("x", 1, 1), ("x", 2, 2)], "burst", [("x", "1", 1)]):
        with pytest.raises(keyward.InvalidInput):
            store.set_limits(c.info.id, bad)
    assert store.key(c.info.id).limits == []


def test_a_quota_counts_down_refuses_at_zero_and_is_set_and_cleared(store):
    c = store.create_key("metered", quota=2, scopes=("orders:read",))
    assert c.info.quota == keyward.Quota(2, None, None)
    assert c.info.scopes == ("orders:read",)
    v = _settled(store, c.key, scope="orders:read")
    assert v and v.scopes == ("orders:read",) and v.retry_after is None
    assert store.verify(c.key, "203.0.113.5")
    assert store.key(c.info.id).quota.remaining == 0
    assert store.verify(c.key, "203.0.113.5").denial is Denial.QUOTA_EXHAUSTED
    assert store.usage(c.info.id).totals.quota_exhausted == 1
    info = store.set_quota(c.info.id, 5, refill=(100, "monthly"))
    assert info.quota == keyward.Quota(5, 100, "monthly")
    assert _settled(store, c.key)
    assert store.key(c.info.id).quota.remaining == 4
    assert store.set_quota(c.info.id, None).quota is None
    assert store.verify(c.key, "203.0.113.5")
    for bad in ((-1, None), (1, (0, "daily")), (1, (5, "weekly")), ("5", None)):
        with pytest.raises(keyward.InvalidInput):
            store.set_quota(c.info.id, *bad)
    with pytest.raises(keyward.InvalidInput):
        store.create_key("bad", scopes=["has space"])
    with pytest.raises(keyward.InvalidInput):
        store.set_scopes(c.info.id, "orders:read")
    assert store.set_scopes(c.info.id, ["b", "a"]).scopes == ("a", "b")
    assert store.verify(c.key, "203.0.113.5", scope="orders:read").denial is Denial.SCOPE_MISSING
    assert store.key(c.info.id).quota is None


def test_check_finds_a_store_that_agrees_with_itself_clean(store):
    store.create_key("k", owner="acme")
    report = store.check()
    assert report and report.clean and report.problems == []
    assert report.rows["keys"] == 1 and report.rows["owners"] == 1
    assert store.check(repair=True).clean
    assert isinstance(keyward.CheckReport, type) and keyward.Problem("owners", "r", "p", True).repaired


def test_a_backup_opens_directly_and_verifies_as_the_original(store, tmp_path):
    kept = store.create_key("kept", owner="acme")
    rotated = store.create_key("rotated")
    fresh = store.regenerate(rotated.info.id, grace=timedelta(hours=1))
    gone = store.create_key("gone")
    store.delete(gone.info.id)
    report = store.backup(tmp_path / "backup")
    assert isinstance(report, keyward.CopyReport)
    assert report.keys == 2 and report.rows > 2 and report.bytes > 0
    newest = store.events()[-1].seq
    assert report.last_event == newest
    with keyward.Store(str(tmp_path / "backup"), argon2=CHEAP) as copy:
        assert [k.id for k in copy.keys()] == [k.id for k in store.keys()]
        for key, valid in [(kept.key, True), (rotated.key, True), (fresh.key, True),
                           (gone.key, False)]:
            assert bool(copy.verify(key, ip="192.0.2.1")) is valid
        copy.create_key("after")
        assert copy.events()[-1].seq == newest + 1
        assert copy.check().clean
    # Into anything not empty: refused, and nothing written there.
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine").write_text("precious")
    for dest in [tmp_path / "full", tmp_path / "backup"]:
        with pytest.raises(keyward.InvalidInput, match="not empty"):
            store.backup(dest)
    assert (tmp_path / "full" / "mine").read_text() == "precious"
    with pytest.raises(keyward.InvalidInput):
        store.backup("bad\0path")
    # copy_to a directory is a backup by another name.
    assert store.copy_to(str(tmp_path / "copy")).keys == 2
