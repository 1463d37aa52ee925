//! Per-key IP whitelists: IPv4, IPv6, CIDR, IPv4-mapped IPv6, enabled with
//! no entries, bad input.

mod common;

use common::{forge, ip, open, temp_store};
use keyward::{CreateOptions, Denial, KeyId, WhitelistError};

#[test]
fn entries_admit_their_networks_and_nothing_else() {
    let (_dir, _path, store) = temp_store();
    let c = store.create("k", CreateOptions::new()).unwrap();
    let (id, key) = (c.info.id, c.key.as_str());
    assert!(!store.whitelist(&id).unwrap().enabled);
    assert!(
        store.verify(key, ip("203.0.113.9"), None).is_valid(),
        "off: anyone"
    );

    let office = store
        .add_whitelist_entry(&id, "office", "198.51.100.0/24")
        .unwrap();
    assert_eq!(office.network, "198.51.100.0/24");
    let host = store
        .add_whitelist_entry(&id, "CRM egress", "203.0.113.7")
        .unwrap();
    let v6 = store
        .add_whitelist_entry(&id, "v6 lab", "2001:db8:42::/48")
        .unwrap();
    assert!(
        store.verify(key, ip("203.0.113.9"), None).is_valid(),
        "entries alone do not restrict"
    );

    let wl = store.set_whitelist_enabled(&id, true).unwrap();
    assert!(wl.enabled);
    assert_eq!(
        wl.entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [office.id.clone(), host.id.clone(), v6.id]
    );
    assert!(store.get(&id).unwrap().whitelist_enabled);

    for allowed in [
        "198.51.100.1",
        "198.51.100.255",
        "203.0.113.7",
        "2001:db8:42::1",
        "2001:db8:42:ffff::9",
    ] {
        assert!(store.verify(key, ip(allowed), None).is_valid(), "{allowed}");
    }
    for denied in [
        "198.51.101.1",
        "203.0.113.8",
        "2001:db8:43::1",
        "::1",
        "10.0.0.1",
    ] {
        assert_eq!(
            store.verify(key, ip(denied), None),
            Denial::IpNotAllowed,
            "{denied}"
        );
    }

    store.remove_whitelist_entry(&id, &host.id).unwrap();
    assert_eq!(
        store.verify(key, ip("203.0.113.7"), None),
        Denial::IpNotAllowed
    );
    store.set_whitelist_enabled(&id, false).unwrap();
    assert!(store.verify(key, ip("203.0.113.7"), None).is_valid());
}

#[test]
fn ipv4_mapped_ipv6_clients_match_ipv4_entries() {
    let (_dir, _path, store) = temp_store();
    let c = store
        .create(
            "k",
            CreateOptions::new().restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    assert!(
        store
            .verify(c.key.as_str(), ip("::ffff:198.51.100.20"), None)
            .is_valid()
    );
    assert_eq!(
        store.verify(c.key.as_str(), ip("::ffff:198.51.101.20"), None),
        Denial::IpNotAllowed
    );
    let usage = store.usage(&c.info.id).unwrap();
    let shown: Vec<_> = usage.ips.iter().map(|r| r.ip).collect();
    assert!(shown.contains(&ip("198.51.101.20")), "IPv4 form: {shown:?}");
    assert!(shown.iter().all(std::net::IpAddr::is_ipv4), "{shown:?}");
}

#[test]
fn enabled_with_no_entries_admits_nobody() {
    let (_dir, _path, store) = temp_store();
    let c = store.create("k", CreateOptions::new()).unwrap();
    store.set_whitelist_enabled(&c.info.id, true).unwrap();
    for addr in ["127.0.0.1", "::1", "198.51.100.1"] {
        assert_eq!(
            store.verify(c.key.as_str(), ip(addr), None),
            Denial::IpNotAllowed
        );
    }
}

#[test]
fn the_whitelist_answers_before_the_secret_is_looked_at() {
    let (_dir, _path, store) = temp_store();
    let c = store
        .create(
            "k",
            CreateOptions::new().restrict_to("office", "10.0.0.0/8"),
        )
        .unwrap();
    let wrong = forge(&store, &c.info.id);
    assert_eq!(
        store.verify(&wrong, ip("10.0.0.1"), None),
        Denial::WrongSecret
    );
    // From outside the whitelist, right or wrong secret alike: IpNotAllowed.
    assert_eq!(
        store.verify(&wrong, ip("192.0.2.1"), None),
        Denial::IpNotAllowed
    );
    assert_eq!(
        store.verify(c.key.as_str(), ip("192.0.2.1"), None),
        Denial::IpNotAllowed
    );
    let totals = store.usage(&c.info.id).unwrap().totals;
    assert_eq!(
        (totals.ip_not_allowed, totals.wrong_secret, totals.denied),
        (2, 1, 3)
    );
}

#[test]
fn bad_entries_are_typed_errors_and_change_nothing() {
    let (_dir, _path, store) = temp_store();
    let c = store.create("k", CreateOptions::new()).unwrap();
    let id = c.info.id;
    store
        .add_whitelist_entry(&id, "office", "10.1.0.0/16")
        .unwrap();
    for bad in [
        "10.0.0.1/8",
        "2001:db8::1/32",
        "300.1.1.1",
        "10.0.0.0/33",
        "",
        "example.com",
    ] {
        assert!(
            matches!(
                store.add_whitelist_entry(&id, "x", bad),
                Err(WhitelistError::InvalidNetwork(_))
            ),
            "{bad:?}"
        );
    }
    let host_bits = store
        .add_whitelist_entry(&id, "x", "10.0.0.1/8")
        .unwrap_err()
        .to_string();
    assert!(
        host_bits.contains("10.0.0.0/8"),
        "suggests the network: {host_bits}"
    );
    assert!(matches!(
        store.add_whitelist_entry(&id, "", "10.2.0.0/16"),
        Err(WhitelistError::InvalidInput(_))
    ));
    assert!(matches!(
        store.add_whitelist_entry(&id, "again", "10.1.0.0/16"),
        Err(WhitelistError::InvalidInput(_))
    ));
    assert!(matches!(
        store.remove_whitelist_entry(&id, "nope"),
        Err(WhitelistError::EntryNotFound { .. })
    ));
    let unknown: KeyId = "AAAAAAAAAAAA".parse().unwrap();
    assert!(matches!(
        store.whitelist(&unknown),
        Err(WhitelistError::KeyNotFound(_))
    ));
    assert!(matches!(
        store.add_whitelist_entry(&unknown, "x", "10.9.0.0/16"),
        Err(WhitelistError::KeyNotFound(_))
    ));
    assert_eq!(
        store.whitelist(&id).unwrap().entries.len(),
        1,
        "nothing was added"
    );
}

#[test]
fn whitelists_survive_reopen() {
    let (_dir, path, store) = temp_store();
    let c = store
        .create("k", CreateOptions::new().restrict_to("v6", "2001:db8::/32"))
        .unwrap();
    let wl = store.whitelist(&c.info.id).unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(store.whitelist(&c.info.id).unwrap(), wl);
    assert!(
        store
            .verify(c.key.as_str(), ip("2001:db8::5"), None)
            .is_valid()
    );
    assert!(
        !store
            .verify(c.key.as_str(), ip("2001:db9::5"), None)
            .is_valid()
    );
}
