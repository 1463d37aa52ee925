"""A WSGI API protected by keyward, for gunicorn with several workers (see
gunicorn.conf.py). The store is the directory in $KEYWARD_DB."""

import json
import os

import keyward
from keyward.wsgi import KeyAuthMiddleware

store = None
protected = None


def open_store():
    global store, protected
    store = keyward.Store(os.environ.get("KEYWARD_DB", "keyward.db"))
    protected = KeyAuthMiddleware(api, store)


def close_store():
    if store is not None:
        store.close()


def api(environ, start_response):
    verdict = environ["keyward.verdict"]
    body = json.dumps({"key_id": verdict.key_id, "worker": os.getpid(), "role": store.status()["role"]})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def app(environ, start_response):
    return protected(environ, start_response)
