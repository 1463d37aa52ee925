"""crm-webhook: a keyward notifier plugin in Python (componentize-py).

The same behaviour as the C build (plugins/crm-webhook-c): POSTs each event
as JSON to the manifest's `url`, with header `auth_header_name` (default
"Authorization") set to `auth_header` when configured. 2xx/3xx: delivered;
4xx: permanent failure (dead letter); 5xx or a failed call: retryable.
Built against keyward:notifier@0.2.0, its body carries the event's delivery
`id` (the same on every retry): with `signing = "standard-webhooks"` in the
manifest the host signs each request, and `id` is its `webhook-id`.

Built with `componentize-py ... componentize --stub-wasi app`: the component
imports nothing but keyward's host interface, so it logs through host.log
(print() is not available).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import DeliveryError_Permanent, DeliveryError_Retryable, Event


class WitWorld(wit_world.WitWorld):
    def on_event(self, event: Event) -> None:
        url = host.config("url")
        if not url:
            raise Err(DeliveryError_Permanent("config `url` is not set"))
        body = json.dumps(
            {
                "id": event.id,
                "seq": event.seq,
                "kind": event.kind,
                "at": event.at,
                "key_id": event.key_id,
                "key_name": event.key_name,
                "masked_key": event.masked_key,
                "data": json.loads(event.data),
            },
            separators=(",", ":"),
        ).encode()
        headers = [("Content-Type", "application/json"), ("User-Agent", "keyward-crm-webhook/0.2.0 (Python)")]
        auth = host.config("auth_header")
        if auth:
            headers.append((host.config("auth_header_name") or "Authorization", auth))
        try:
            response = host.http(host.Request(method="POST", url=url, headers=headers, body=body))
        except Err as e:
            host.log(host.Level.WARN, "POST failed; will retry")
            raise Err(DeliveryError_Retryable(str(e.value)))
        if response.status >= 500:
            raise Err(DeliveryError_Retryable("the CRM answered 5xx"))
        if response.status >= 400:
            raise Err(DeliveryError_Permanent("the CRM answered 4xx"))
        host.log(host.Level.INFO, "event delivered")
