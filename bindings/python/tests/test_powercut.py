"""Power cuts: every change acknowledged before the power went is there after
it, and every secret acknowledged as replaced stays refused.

A store lives on a file system that keeps in memory what was not synced
(lazyfs.py, over FUSE). A writer process changes keys and prints each
change once its call has returned; at a random moment it is killed and the
power is cut (what was not synced is gone); the file system comes back
with what was durable, and the store is opened and checked against what
was acknowledged. Needs /dev/fuse, libfuse 3 and mfusepy (the test script
installs them); under CI=true their absence is a failure.
"""

import json
import os
import pathlib
import random
import subprocess
import sys
import time

import pytest

import keyward
from polling import eventually

from conftest import CHEAP

LAZYFS = pathlib.Path(__file__).with_name("lazyfs.py")
ROUNDS = 8


def _fuse_missing():
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as e:
        return f"mfusepy cannot be loaded: {e}"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    return None


@pytest.fixture
def machine(tmp_path):
    missing = _fuse_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the power-cut test cannot run: {missing}")
        pytest.skip(missing)
    m = Machine(tmp_path)
    yield m
    m.off()


class Machine:
    """A mount point whose power can be cut."""

    def __init__(self, tmp):
        self.mount = tmp / "disk"
        self.state = tmp / "durable.pickle"
        self.mount.mkdir()
        self.daemon = None

    def on(self):
        self.daemon = subprocess.Popen(
            [sys.executable, str(LAZYFS), str(self.mount), str(self.state)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually("the file system to mount", lambda: os.path.ismount(self.mount))

    def cut(self):
        """The power goes: only what was synced is left."""
        try:
            os.mkdir(self.mount / ".powercut")
        except OSError:
            pass
        eventually("the file system to stop", lambda: self.daemon.poll() is not None)
        self.off()

    def off(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        if os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], check=False)


# Changes keys and prints each once it is acknowledged (its call returned);
# before each call, what it is about to do.
WRITER = r"""
import json, random, sys, keyward
store = keyward.Store(sys.argv[1], argon2=json.loads(sys.argv[2]))
rng = random.Random(int(sys.argv[3]))
ids = [k.id for k in store.keys()]
def say(**what):
    print(json.dumps(what), flush=True)
n = 0
while True:
    n += 1
    op = rng.choice(["create", "regenerate", "regenerate", "regenerate", "delete", "disable"])
    if op == "create" or not ids:
        say(begin="create")
        c = store.create_key(f"k{sys.argv[3]}-{n}")
        ids.append(c.info.id)
        say(op="create", id=c.info.id, key=c.key, gen=1)
        continue
    key_id = rng.choice(ids)
    say(begin=op, id=key_id)
    if op == "regenerate":
        c = store.regenerate(key_id)
        say(op=op, id=key_id, key=c.key, gen=c.info.generation)
    elif op == "delete":
        store.delete(key_id)
        ids.remove(key_id)
        say(op=op, id=key_id)
    else:
        store.set_disabled(key_id, True)
        say(op=op, id=key_id)
"""


class Acked:
    """What the writer acknowledged, key by key; and what it was doing
    when it was killed (which may or may not have been made, then and for
    good: a key whose delete was in flight may be gone)."""

    def __init__(self):
        self.keys = {}
        self.in_flight = None

    def take(self, line):
        what = json.loads(line)
        if "begin" in what:
            self.in_flight = (what["begin"], what.get("id"))
            return
        self.in_flight = None
        k = self.keys.setdefault(what["id"], {"keys": {}, "gen": 0, "deleted": False,
                                              "disabled": False, "maybe_deleted": False})
        if what["op"] in ("create", "regenerate"):
            k["keys"][what["gen"]] = what["key"]
            k["gen"] = max(k["gen"], what["gen"])
        elif what["op"] == "delete":
            k["deleted"] = True
        else:
            k["disabled"] = True


    def killed(self):
        """The writer was killed: its change in flight may have been made."""
        op, key_id = self.in_flight or (None, None)
        if op == "delete" and key_id in self.keys:
            self.keys[key_id]["maybe_deleted"] = True
        self.in_flight = None


def run_writer(path, seed, seconds):
    """Runs the writer for `seconds`, then SIGKILL; its output lines."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, json.dumps(CHEAP), str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    writer.kill()
    out, err = writer.communicate()
    assert "Traceback" not in err, err
    return out.splitlines()


def check(path, acked):
    """The store after the cut against what was acknowledged before it."""
    with keyward.Store(path, argon2=CHEAP) as store:
        present = {k.id: k for k in store.keys()}
        checked = 0
        for key_id, k in acked.keys.items():
            if k["deleted"]:
                assert key_id not in present, f"{key_id}: an acknowledged delete was lost"
                for secret in k["keys"].values():
                    assert store.verify(secret, "10.0.0.1").denial is keyward.Denial.UNKNOWN_KEY
                continue
            if k["maybe_deleted"] and key_id not in present:
                continue
            assert key_id in present, f"{key_id}: an acknowledged key was lost"
            info = present[key_id]
            assert info.generation >= k["gen"], f"{key_id}: generation {k['gen']} was lost"
            if k["disabled"]:
                assert info.disabled, f"{key_id}: an acknowledged disable was lost"
            newest = max(k["keys"]) if k["keys"] else None
            for gen, secret in k["keys"].items():
                v = store.verify(secret, "10.0.0.1")
                if gen != newest:
                    assert not v, f"{key_id}: the secret of generation {gen}, replaced, is admitted"
                    # (Rotated; or disabled; or, dropped past the generations
                    # a key keeps, not its secret at all.)
                elif info.generation == gen and not info.disabled:
                    assert v, f"{key_id}: the acknowledged secret of generation {gen} is refused: {v.denial}"
                else:
                    assert not v
            checked += 1
        return checked


def test_every_acknowledged_change_survives_a_power_cut(machine):
    rng = random.Random(os.getpid())
    acked = Acked()
    path = str(machine.mount / "store")
    machine.on()
    checked = 0
    for _ in range(ROUNDS):
        for line in run_writer(path, rng.randrange(1 << 30), rng.uniform(0.3, 1.2)):
            acked.take(line)
        acked.killed()
        machine.cut()
        machine.on()
        checked += check(path, acked)
    machine.cut()
    # The rounds acknowledged changes, and they were checked.
    assert sum(k["gen"] for k in acked.keys.values()) > ROUNDS, acked.keys
    assert checked > 0
