"""Every key may belong to an account: set at creation, named in the
verdict (refusals included), moved by set_owner, listed by owner through
the index, and listed in pages."""

import pytest

import keyward
from keyward.wsgi import KeyAuthMiddleware


def test_the_verdict_names_the_account(store):
    owned = store.create_key("crm", owner="acct_42")
    plain = store.create_key("plain")
    assert owned.info.owner == "acct_42" and plain.info.owner is None
    v = store.verify(owned.key, "10.0.0.1")
    assert v and v.owner == "acct_42"
    assert store.verify(plain.key, "10.0.0.1").owner is None
    store.set_disabled(owned.info.id, True)
    refused = store.verify(owned.key, "10.0.0.1")
    assert not refused and refused.denial is keyward.Denial.DISABLED and refused.owner == "acct_42"
    assert store.verify("kw_nope", "10.0.0.1").owner is None
    longest = "o" * 128
    k = store.create_key("long", owner=longest)
    assert store.verify(k.key, "10.0.0.1").owner == longest


def test_owners_are_listed_moved_and_checked(store):
    a = [store.create_key(f"a{i}", owner="acct_a") for i in range(3)]
    store.create_key("b", owner="acct_b")
    store.create_key("none")
    assert {k.id for k in store.keys(owner="acct_a")} == {c.info.id for c in a}
    assert store.keys(owner="acct_zzz") == []
    moved = store.set_owner(a[0].info.id, "acct_b")
    assert moved.owner == "acct_b"
    assert len(store.keys(owner="acct_a")) == 2 and len(store.keys(owner="acct_b")) == 2
    assert store.verify(a[0].key, "10.0.0.1").owner == "acct_b"
    assert store.set_owner(a[0].info.id, None).owner is None
    event = store.events()[-1]
    assert event.kind == "key.updated" and event.data["owner_from"] == "acct_b" and event.data["owner_to"] is None
    for bad in ("", "x" * 129, "tab\there"):
        with pytest.raises(keyward.InvalidInput):
            store.create_key("k", owner=bad)
        with pytest.raises(keyward.InvalidInput):
            store.set_owner(a[1].info.id, bad)
    with pytest.raises(keyward.NotFound):
        store.set_owner("AAAAAAAAAAAA", "acct_a")


def test_pages_return_every_key_once_in_id_order(store):
    for i in range(7):
        store.create_key(f"k{i}", owner="acct_paged" if i % 2 else None)
    for owner, expected in ((None, 7), ("acct_paged", 3)):
        seen, after = [], None
        while True:
            page = store.key_page(owner=owner, after=after, limit=2)
            assert len(page.keys) <= 2
            seen += [k.id for k in page.keys]
            if page.next is None:
                break
            after = page.next
        assert seen == sorted(seen) and len(seen) == expected
    for bad in (0, 1001, -1, True):
        with pytest.raises(keyward.InvalidInput):
            store.key_page(limit=bad)


def test_the_middleware_passes_the_account_on(store):
    k = store.create_key("crm", owner="acct_7")
    seen = {}

    def app(environ, start_response):
        seen["owner"] = environ["keyward.verdict"].owner
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = KeyAuthMiddleware(app, store)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "10.0.0.1",
               "HTTP_X_API_KEY": k.key}
    body = b"".join(wrapped(environ, lambda status, headers: None))
    assert body == b"ok" and seen["owner"] == "acct_7"


def test_an_account_is_summed_and_closed(store):
    keys = [store.create_key(f"k{i}", owner="acct_closing") for i in range(3)]
    kept = store.create_key("kept", owner="acct_kept")
    for k in keys:
        assert store.verify(k.key, "10.0.0.1")
    store.flush()
    assert store.owners() == [("acct_closing", 3), ("acct_kept", 1)]
    usage = store.owner_usage("acct_closing")
    assert usage["keys"] == 3 and usage["totals"]["allowed"] == 3 and usage["last_used_at"] is not None
    assert store.delete_owner_keys("acct_closing") == 3
    assert all(store.verify(k.key, "10.0.0.1").denial is keyward.Denial.UNKNOWN_KEY for k in keys)
    assert store.delete_owner_keys("acct_closing") == 0
    assert store.owners() == [("acct_kept", 1)] and store.verify(kept.key, "10.0.0.1")
    deleted = [e for e in store.events() if e.kind == "key.deleted"]
    assert len(deleted) == 3 and all(e.data["owner"] == "acct_closing" for e in deleted)
    with pytest.raises(keyward.InvalidInput):
        store.delete_owner_keys("")
