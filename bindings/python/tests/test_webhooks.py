"""Signed notifications, checked as a receiver checks them: with the
``standardwebhooks`` package from PyPI. The shipped plugins (C, Python),
built by plugins/build.sh, POST to a server on 127.0.0.1; the host signs
their requests with the manifest's secrets."""

import os

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from conftest import TARGET
from polling import eventually

OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_q0hR8zKl3vB6yT1mN4pW7sE2uX5aC9dF0gH3jK6lZ8o="
# The C build's committed bindings are API 0.1.0; the Python build reads the newest WIT.
PLUGINS = {"crm-webhook-c.wasm": "0.1.0", "crm-webhook-py.wasm": "0.2.0"}


def built(name):
    path = TARGET / "plugins" / name
    if not path.exists():
        message = f"{path} is missing: build the shipped plugins with bash plugins/build.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path.read_bytes()


def manifest(name, component, origin, secrets):
    return (
        f'name = "{name}"\nversion = "0.1.0"\napi = "{PLUGINS[component]}"\n'
        f'events = ["key.created"]\nallowed_hosts = ["{origin}"]\n'
        f'signing = "standard-webhooks"\n\n[config]\nurl = "{origin}/hooks/keyward"\n'
        f'signing_secret = "{secrets}"\n'
    )


@pytest.mark.parametrize("component", sorted(PLUGINS))
def test_a_receiver_verifies_every_request_and_deduplicates_a_retry(store, receiver, component):
    origin, answers = receiver.origin, receiver.answers
    store.install_plugin(built(component), manifest("crm", component, origin, f"{OLD} {NEW}"),
                         allow_private_network=True)
    answers.append(503)  # the first attempt fails: the event is retried
    created = store.create_key("Acme CRM")
    eventually("the event and its retry", lambda: len(receiver.received) >= 2)
    received = [(headers, body) for _, headers, body in receiver.received]

    for headers, body in received:
        # Either secret verifies during the rotation (timestamp within the
        # library's tolerance, signature over the exact body).
        for secret in (OLD, NEW):
            event = Webhook(secret).verify(body, headers)
            assert event["key_id"] == created.info.id
        # A changed body, or a secret of someone else's, does not.
        with pytest.raises(WebhookVerificationError):
            Webhook(OLD).verify(body.replace(b"Acme", b"Acne"), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(body, headers)
        if PLUGINS[component] != "0.1.0":
            assert Webhook(NEW).verify(body, headers)["id"] == headers["webhook-id"]
    ids = {headers["webhook-id"] for headers, _ in received}
    assert len(ids) == 1, f"a retry carries the event's id: {ids}"

    # A receiver that remembers ids takes the event once.
    seen, taken = set(), []
    for headers, body in received:
        if headers["webhook-id"] not in seen:
            seen.add(headers["webhook-id"])
            taken.append(Webhook(OLD).verify(body, headers))
    assert len(taken) == 1


def test_every_event_and_plugin_has_its_own_id(store, receiver):
    origin = receiver.origin
    for i, component in enumerate(sorted(PLUGINS)):
        store.install_plugin(built(component), manifest(f"crm{i}", component, origin, NEW),
                             allow_private_network=True)
    store.create_key("one")
    store.create_key("two")
    eventually("two events to two plugins", lambda: len(receiver.received) >= 4)
    ids = [headers["webhook-id"] for _, headers, body in receiver.received if Webhook(NEW).verify(body, headers)]
    assert len(set(ids)) == 4, ids
