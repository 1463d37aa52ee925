"""A store's lifetime against its threads: closing (or the finaliser, at
exit too) never frees the C handle under a call in flight on another
thread; calls after close raise StoreClosed. And what a caller must never
lose or see: the only copy of a regenerated key, a password in a repr."""

import ipaddress
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import keyward
import keyward._store as _store

from conftest import CHEAP
from polling import eventually


class _Watched:
    """The C library, watched: counts calls inside kw_verify_scoped (what
    Store.verify's general way calls), and counts a violation when the
    handle is freed while any is."""

    def __init__(self, real):
        self._real = real
        self._lock = threading.Lock()
        self.inside = 0
        self.verified = 0
        self.violations = 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def kw_verify_scoped(self, *args):
        with self._lock:
            self.inside += 1
        try:
            return self._real.kw_verify_scoped(*args)
        finally:
            with self._lock:
                self.inside -= 1
                self.verified += 1

    def _freeing(self):
        with self._lock:
            if self.inside:
                self.violations += 1

    def kw_store_close(self, handle):
        self._freeing()
        return self._real.kw_store_close(handle)

    def kw_store_free(self, handle):
        self._freeing()
        return self._real.kw_store_free(handle)


def test_close_waits_for_verifications_in_flight_on_four_threads(store_path, monkeypatch):
    watched = _Watched(_store.lib)
    monkeypatch.setattr(_store, "lib", watched)
    with keyward.Store(store_path, argon2=CHEAP) as s:
        key = s.create_key("hot").key
    # An address object (not text) takes the general way, through the C
    # interface this watches; text takes the native call (next test).
    address = ipaddress.ip_address("10.0.0.1")
    unexpected = []
    for _ in range(60):
        s = keyward.Store(store_path, argon2=CHEAP)
        started = threading.Barrier(5)

        def hammer():
            started.wait()
            while True:
                try:
                    assert s.verify(key, address)
                except keyward.StoreClosed:
                    return
                except BaseException as e:  # anything else is a failure
                    unexpected.append(repr(e))
                    return

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        started.wait()
        before = watched.verified
        while watched.verified < before + 20:
            pass  # let them get going: closing must meet calls in flight
        s.close()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
    assert unexpected == []
    assert watched.violations == 0, f"the handle was freed under {watched.violations} calls"


def test_close_waits_for_native_verifications_running_argon2(store_path):
    """Store.verify's native call (text address) on four threads, each
    verifying a key cold, so each call spends milliseconds in argon2 with
    the GIL released: close() returns only after every call that entered
    has returned its verdict; calls that did not enter raise StoreClosed."""
    costly = {"memory_kib": 8192, "iterations": 2, "parallelism": 1}
    with keyward.Store(store_path, argon2=costly) as s:
        keys = [s.create_key(f"k{i}").key for i in range(4 * 8)]
    met_in_flight = 0
    for round_ in range(8):  # close meets 1-4 calls in flight each time
        s = keyward.Store(store_path, argon2=costly)  # a cold cache each time
        calling = threading.Barrier(5)
        results = []
        lock = threading.Lock()

        def verify(key):
            calling.wait()
            try:
                verdict = s.verify(key, "10.0.0.1")
                outcome = ("verdict", verdict.valid, time.monotonic())
            except keyward.StoreClosed:
                outcome = ("closed", None, time.monotonic())
            except BaseException as e:  # anything else is a failure
                outcome = ("error", repr(e), time.monotonic())
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=verify, args=(keys[round_ * 4 + i],)) for i in range(4)]
        for t in threads:
            t.start()
        calling.wait()
        eventually("a verification to start", lambda: s._life.gate.calls > 0 or results != [],
                   within=30, every=0)
        s.close()
        closed_at = time.monotonic()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
        assert [r for r in results if r[0] == "error"] == []
        answered = [r for r in results if r[0] == "verdict"]
        assert all(valid for _, valid, _ in answered), results
        assert all(at <= closed_at for _, _, at in answered), "close returned before a call in flight"
        met_in_flight += len(answered)
    # The close met calls in flight at least once (else this tested nothing).
    assert met_in_flight > 0


def test_the_finaliser_at_exit_waits_for_daemon_threads_and_flushes(store_path, tmp_path):
    """A program that exits with daemon threads still verifying: the store
    is closed at exit after their calls return, and its usage is flushed."""
    script = tmp_path / "exit_while_verifying.py"
    script.write_text(textwrap.dedent(f"""
        import threading, keyward
        s = keyward.Store({store_path!r}, argon2={CHEAP!r})
        key = s.create_key("k").key
        go = threading.Event()
        def hammer():
            go.set()
            while True:
                try:
                    s.verify(key, "10.0.0.1")
                except keyward.StoreClosed:
                    return
        for _ in range(4):
            threading.Thread(target=hammer, daemon=True).start()
        go.wait()
        # Exits here, the store not closed, four threads inside verify.
    """))
    for _ in range(5):
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    with keyward.Store(store_path) as again:
        infos = again.keys()
        assert len(infos) == 5
        assert all(again.usage(i.id).totals.allowed > 0 for i in infos), "usage flushed at exit"


def test_regenerate_returns_the_new_key_even_if_reading_the_record_would_fail(store, monkeypatch):
    c = store.create_key("k")

    def unreadable(*_args, **_kwargs):
        raise keyward.StorageError("the database went away", 201)

    monkeypatch.setattr(keyward.Store, "key", unreadable)
    fresh = store.regenerate(c.info.id)
    assert fresh.info.generation == 2 and fresh.info.id == c.info.id
    made = store.create_key("another")
    assert made.info.name == "another"
    monkeypatch.undo()
    assert store.verify(fresh.key, "10.0.0.1")
    assert store.verify(made.key, "10.0.0.1")


@pytest.mark.parametrize(
    "location, shown",
    [
        ("postgresql://app:s3cret@db.internal:5432/keys?schema=acme",
         "postgresql://app:***@db.internal:5432/keys?schema=acme"),
        ("postgres://app@db/keys?password=s3cret&sslmode=verify-full",
         "postgres://app@db/keys?password=***&sslmode=verify-full"),
        ("postgresql:///keys?host=/var/run/postgresql&user=root",
         "postgresql:///keys?host=/var/run/postgresql&user=root"),
        ("/var/lib/keyward/store", "/var/lib/keyward/store"),
    ],
)
def test_a_store_location_is_shown_without_its_password(location, shown):
    assert _store._redacted(location) == shown
    assert "s3cret" not in _store._redacted(location)


def test_repr_of_a_store_has_no_password(store_path):
    with keyward.Store(store_path, argon2=CHEAP) as s:
        s._path = "postgresql://app:s3cret@db/keys"
        assert "s3cret" not in repr(s) and "app:***@db" in repr(s)
        s._path = store_path


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_is_told_to_open_the_store_itself(store):
    key = store.create_key("k").key
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            store.verify(key, "10.0.0.1")
        except keyward.StoreForked as e:
            code = 0 if "post_fork" in str(e) and e.status == 203 else 2
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert store.verify(key, "10.0.0.1"), "the parent's store is untouched"
