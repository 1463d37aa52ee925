"""Plugins from Python: install a component (a WAT fixture that POSTs each
event kind), watch its deliveries reach a server on 127.0.0.1, and manage it."""

import pytest

import keyward

from conftest import REPO
from polling import eventually

TEMPLATE = (REPO / "tests" / "fixtures" / "notifier.wat.in").read_text()
POST_KIND = "(call $post (local.get $kind) (local.get $kind_len))"


def component(url: str) -> bytes:
    return (
        TEMPLATE.replace("{BODY}", POST_KIND)
        .replace("{EXTRA}", "")
        .replace("{URL_LEN}", str(len(url)))
        .replace("{URL}", url)
        .encode()
    )


def manifest(name: str, origin: str, events='["*"]') -> str:
    return f'name = "{name}"\nversion = "1.0.0"\napi = "0.1.0"\nevents = {events}\nallowed_hosts = ["{origin}"]\n'


def test_install_deliver_and_manage(store, receiver):
    origin, received = receiver.origin, receiver.received
    # The webhook is on loopback: only an operator's grant reaches it.
    info = store.install_plugin(component(origin + "/hook"), manifest("crm", origin), allow_private_network=True)
    assert (info.name, info.api, info.enabled, info.events) == ("crm", "0.1.0", True, ["*"])
    assert info.installed_at.tzinfo is not None
    c = store.create_key("k")
    store.regenerate(c.info.id)
    eventually("two deliveries", lambda: len(received) == 2)
    assert [(path, body) for path, _, body in received] == [("/hook", b"key.created"), ("/hook", b"key.regenerated")]
    eventually("two deliveries counted", lambda: store.plugin("crm").status.delivered == 2)
    status = store.plugin("crm").status
    assert (status.pending, status.dead_letters, status.last_error) == (0, 0, None)
    assert status.last_success_at is not None

    assert not store.set_plugin_enabled("crm", False).enabled
    assert [p.name for p in store.plugins()] == ["crm"]
    assert store.dead_letters("crm") == []
    assert store.retry_plugin("crm") == 0
    assert isinstance(store.plugin_log("crm"), list)
    store.remove_plugin("crm")
    assert store.plugins() == []


def test_plugin_errors(store, tmp_path):
    with pytest.raises(keyward.InvalidInput, match="manifest"):
        store.install_plugin(b"(component)", "name = 1")
    with pytest.raises(keyward.InvalidInput, match="component"):
        store.install_plugin(b"junk", manifest("x", "http://127.0.0.1:1"))
    with pytest.raises(keyward.NotFound):
        store.plugin("missing")
    with pytest.raises(keyward.NotFound):
        store.remove_plugin("missing")
    path = tmp_path / "plugin.wat"
    path.write_bytes(component("http://127.0.0.1:1/x"))
    store.install_plugin(path, manifest("from-file", "http://127.0.0.1:1"))
    with pytest.raises(keyward.InvalidInput, match="installed already"):
        store.install_plugin(path, manifest("from-file", "http://127.0.0.1:1"))


def test_an_operator_can_allow_private_networks_at_install(store, receiver):
    origin = receiver.origin
    info = store.install_plugin(component(origin + "/hook"), manifest("internal", origin), allow_private_network=True)
    assert info.allow_private_network is True
    assert store.plugin("internal").allow_private_network is True
