"""The C library's functions and constants through cffi, in ABI mode:
``lib`` is the shared library that is also ``keyward._fast`` (one file
holds both), declared by ``_cdef.h`` (include/keyward.h's declarations,
generated with it)."""

from __future__ import annotations

import os

from cffi import FFI

from keyward import _fast

__all__ = ["ffi", "lib"]

ffi = FFI()
with open(os.path.join(os.path.dirname(__file__), "_cdef.h"), encoding="utf-8") as _f:
    ffi.cdef(_f.read())
lib = ffi.dlopen(_fast.__file__)
