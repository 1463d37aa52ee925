"""Many processes on one store: four Python processes and the CLI share a
sled store; the first opener owns it, the others attach. A regeneration
made anywhere is refused everywhere, and usage from every process reaches
the store."""

import multiprocessing
import os

import keyward
from conftest import CHEAP
from polling import eventually



def _worker(path, conn, n):
    store = keyward.Store(path, argon2=CHEAP, usage_flush_ms=50)
    conn.send(store.status())
    ip = f"10.0.0.{n + 1}"
    while True:
        cmd, arg = conn.recv()
        if cmd == "create":
            c = store.create_key(arg)
            conn.send((c.info.id, c.key))
        elif cmd == "verify":
            v = store.verify(arg, ip, integration=f"worker-{n}")
            conn.send((v.valid, v.denial.name if v.denial else None))
        elif cmd == "regenerate":
            conn.send(store.regenerate(arg).key)
        elif cmd == "flush":
            store.flush()
            conn.send(True)
        elif cmd == "status":
            conn.send(store.status())
        elif cmd == "stop":
            store.close()
            conn.send(True)
            return


class Worker:
    def __init__(self, ctx, path, n):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(path, child, n))
        self.proc.start()
        assert self.conn.poll(60), "the worker did not open the store"
        self.status = self.conn.recv()

    def ask(self, cmd, arg=None):
        self.conn.send((cmd, arg))
        assert self.conn.poll(60), f"no answer to {cmd}"
        return self.conn.recv()

    def stop(self):
        self.ask("stop")
        self.proc.join(30)


def test_four_processes_and_the_cli_share_one_store(store_path, cli):
    ctx = multiprocessing.get_context("spawn")
    workers = [Worker(ctx, store_path, n) for n in range(4)]
    try:
        roles = sorted(w.status["role"] for w in workers)
        assert roles == ["attached", "attached", "attached", "owner"]
        owner_pid = workers[0].status["owner_pid"]
        assert owner_pid == workers[0].proc.pid
        assert all(w.status["owner_pid"] == owner_pid for w in workers)

        key_id, key = workers[1].ask("create", "shared")
        for w in workers:
            eventually("every process admits the new key", lambda: w.ask("verify", key)[0])

        # The CLI attaches beside them and regenerates: refused everywhere.
        assert cli(store_path, "status")["role"] == "attached"
        from_cli = cli(store_path, "key", "regenerate", key_id, "--yes")["key"]
        for w in workers:
            eventually("the old key is refused", lambda: w.ask("verify", key) == (False, "ROTATED"))
            assert w.ask("verify", from_cli) == (True, None)

        # Regenerated in one worker: refused in the others at once after.
        newest = workers[3].ask("regenerate", key_id)
        for w in workers:
            eventually("the CLI's key is refused", lambda: not w.ask("verify", from_cli)[0])
            assert w.ask("verify", newest) == (True, None)

        # Usage from every process reaches the store.
        for w in workers:
            w.ask("flush")
        usage = cli(store_path, "usage", key_id)
        assert {ip["ip"] for ip in usage["ips"]} >= {f"10.0.0.{n + 1}" for n in range(4)}
        assert {i["name"] for i in usage["integrations"]} >= {f"worker-{n}" for n in range(4)}
    finally:
        for w in workers:
            if w.proc.is_alive():
                w.stop()
