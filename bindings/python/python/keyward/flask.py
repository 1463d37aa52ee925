"""Flask: ``@auth.key_required`` admits requests carrying a valid key.

::

    from flask import Flask, g
    from keyward.flask import KeyAuth

    app = Flask(__name__)
    app.config["KEYWARD_DB"] = "/var/lib/myapp/keys"
    auth = KeyAuth(app)

    @app.get("/orders")
    @auth.key_required(scope="orders:read")
    def orders():
        return {"customer": g.keyward_verdict.owner}

Settings: ``KEYWARD_DB`` (a path or a ``postgresql://`` URL; or pass
``store=``), ``KEYWARD_HEADER``, ``KEYWARD_TRUSTED_PROXIES``,
``KEYWARD_FORWARDED_HEADER``, ``KEYWARD_OPTIONS`` (keyword arguments of
:class:`keyward.Store`). The store is opened once per process, when first
needed. Refusals answer as :mod:`keyward.wsgi` does.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Callable, Optional, Tuple

from flask import Flask, Response, current_app, g, request

from keyward._http import Gate, Refusal
from keyward._store import Store

EXTENSION = "keyward"


class KeyAuth:
    def __init__(self, app: Optional[Flask] = None, store: Optional[Store] = None) -> None:
        self._store = store
        self._opened: Optional[Tuple[int, Store]] = None
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        conf = app.config
        conf.setdefault("KEYWARD_HEADER", "X-API-Key")
        conf.setdefault("KEYWARD_TRUSTED_PROXIES", ())
        conf.setdefault("KEYWARD_FORWARDED_HEADER", "X-Forwarded-For")
        conf.setdefault("KEYWARD_OPTIONS", {})
        app.extensions[EXTENSION] = Gate(self.store, conf["KEYWARD_HEADER"],
                                         conf["KEYWARD_TRUSTED_PROXIES"], conf["KEYWARD_FORWARDED_HEADER"])

    def store(self) -> Store:
        """The store: the one given, else ``KEYWARD_DB`` opened once per process."""
        if self._store is not None:
            return self._store
        pid = os.getpid()
        opened = self._opened
        if opened is not None and opened[0] == pid:
            return opened[1]
        with self._lock:
            if self._opened is None or self._opened[0] != pid:
                conf = current_app.config
                if not conf.get("KEYWARD_DB"):
                    raise RuntimeError("KEYWARD_DB is not set (or pass store= to KeyAuth)")
                self._opened = (pid, Store(str(conf["KEYWARD_DB"]), **dict(conf["KEYWARD_OPTIONS"])))
            return self._opened[1]

    def key_required(self, scope: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A view decorator: the view runs only for a request carrying a
        valid key (with ``scope``), with its verdict in
        ``g.keyward_verdict``."""

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                gate: Gate = current_app.extensions[EXTENSION]
                answer = gate.check(request.headers.get, request.headers.getlist(gate.forwarded),
                                    request.remote_addr, scope)
                if isinstance(answer, Refusal):
                    return Response(answer.body, status=answer.status, headers=answer.extra_headers,
                                    mimetype="application/json")
                g.keyward_verdict = answer
                return view(*args, **kwargs)

            return guarded

        return decorate
