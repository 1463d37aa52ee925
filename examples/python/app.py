"""A tiny WSGI API protected by keyward's middleware.

    pip install ./bindings/python
    python examples/python/app.py              # serves on 127.0.0.1:8000, prints a key and curl commands
    python examples/python/app.py --self-test  # serves, calls itself over HTTP, prints the answers, exits
"""

import argparse
import json
import os
import tempfile
import threading
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import keyward
from keyward.wsgi import KeyAuthMiddleware


def api(environ, start_response):
    verdict = environ["keyward.verdict"]
    body = json.dumps({"hello": "integration", "key_id": verdict.key_id}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def call(url, key):
    req = urllib.request.Request(url, headers={"X-API-Key": key, "User-Agent": "demo-client/1.0"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default=os.path.join(tempfile.mkdtemp(), "keys"))
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()

    with keyward.Store(args.store) as store:
        created = store.create_key("demo integration")
        port = 0 if args.self_test else args.port
        httpd = make_server("127.0.0.1", port, KeyAuthMiddleware(api, store), handler_class=Quiet)
        url = f"http://127.0.0.1:{httpd.server_port}/"
        if not args.self_test:
            print(f"store: {args.store}")
            print(f"key (shown once): {created.key}")
            print(f"try:  curl -H 'X-API-Key: {created.key}' {url}")
            print(f"      curl -H 'X-API-Key: wrong' {url}")
            try:
                httpd.serve_forever()
            except KeyboardInterrupt:
                pass
            return
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        print("valid key:      ", *call(url, created.key))
        print("malformed key:  ", *call(url, "kw_wrong"))
        fresh = store.regenerate(created.info.id)
        print("after regenerate, old key:", *call(url, created.key))
        print("after regenerate, new key:", *call(url, fresh.key))
        usage = store.usage(created.info.id)
        print("usage:", usage.totals.allowed, "allowed,", usage.totals.denied, "denied, from",
              [ip.ip for ip in usage.ips], "via", [i.name for i in usage.integrations])
        httpd.shutdown()
        httpd.server_close()


if __name__ == "__main__":
    main()
