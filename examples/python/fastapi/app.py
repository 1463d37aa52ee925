"""A FastAPI app protected by keyward.

    pip install ./bindings/python fastapi uvicorn
    KEYWARD_DB=/tmp/keys keyward --db /tmp/keys key create app --scope orders:read --owner acme
    KEYWARD_DB=/tmp/keys uvicorn app:app          # in examples/python/fastapi
    curl -H "X-API-Key: kw_..." http://127.0.0.1:8000/orders

The OpenAPI document (/docs) shows the key as an API-key security scheme.
"""

import os

from fastapi import Depends, FastAPI

import keyward
from keyward.fastapi import KeyAuth, KeyRefused, refusal_handler

store = keyward.Store(os.environ.get("KEYWARD_DB", "keys.db"))
app = FastAPI(title="orders")
app.add_exception_handler(KeyRefused, refusal_handler)
orders_reader = KeyAuth(store, scope="orders:read")


@app.get("/orders")
def orders(verdict: keyward.Verdict = Depends(orders_reader)) -> dict:
    return {"customer": verdict.owner, "orders": []}
