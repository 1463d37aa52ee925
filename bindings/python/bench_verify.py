"""Per-call cost of Store.verify (warm) and, for comparison, of the raw cffi
call it wraps. Run after `pip install ./bindings/python`:

    python bindings/python/bench_verify.py
"""

import os
import tempfile
import timeit

import keyward
from keyward._native import ffi, lib

N = 200_000


def main():
    path = os.path.join(tempfile.mkdtemp(), "store")
    with keyward.Store(path, argon2={"memory_kib": 64, "iterations": 1, "parallelism": 1}) as store:
        keys = [store.create_key(f"bench {i}").key for i in range(100)]
        for k in keys:
            assert store.verify(k, "203.0.113.7", "bench")
        key = keys[7]
        per_call = min(timeit.repeat(lambda: store.verify(key, "203.0.113.7", "bench"), number=N, repeat=5)) / N
        print(f"Store.verify (warm):      {per_call * 1e9:7.0f} ns/call")

        handle = store._life.ptr
        kb, ib, ig = key.encode(), b"203.0.113.7", b"bench"
        out = ffi.new("kw_verdict *")
        out.size = ffi.sizeof("kw_verdict")
        raw = min(timeit.repeat(lambda: lib.kw_verify(handle, kb, len(kb), ib, ig, out), number=N, repeat=5)) / N
        assert out.valid
        print(f"raw cffi lib.kw_verify:   {raw * 1e9:7.0f} ns/call")


if __name__ == "__main__":
    main()
