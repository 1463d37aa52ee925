//! The verify path end to end on a small store: any key bytes, client
//! address and integration; only the keys the store would admit are
//! admitted, never a panic.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use keyward::{Argon2Params, CreateOptions, Options, Store, VerifyRequest};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    store: Store,
    /// Keys and the addresses from which each is admitted (`None`: any).
    admitted: Vec<(String, Option<ipnet::IpNet>)>,
    refused: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut o = Options::default();
        o.argon2 = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let store = Store::open_in_memory(&o).unwrap();
        let open = store.create("open", CreateOptions::new()).unwrap();
        let office = store
            .create(
                "office",
                CreateOptions::new().restrict_to("office", "10.0.0.0/8"),
            )
            .unwrap();
        let rotated = store.create("rotated", CreateOptions::new()).unwrap();
        let graced = store
            .regenerate(&rotated.info.id, Duration::from_hours(1))
            .unwrap();
        let gone = store.create("gone", CreateOptions::new()).unwrap();
        let newest = store.regenerate(&gone.info.id, Duration::ZERO).unwrap();
        Fixture {
            admitted: vec![
                (open.key.as_str().to_string(), None),
                (
                    office.key.as_str().to_string(),
                    Some("10.0.0.0/8".parse().unwrap()),
                ),
                (rotated.key.as_str().to_string(), None),
                (graced.key.as_str().to_string(), None),
                (newest.key.as_str().to_string(), None),
            ],
            refused: vec![gone.key.as_str().to_string()],
            store,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 18 {
        return;
    }
    let f = fixture();
    let (head, rest) = data.split_at(18);
    let ip = if head[0] % 2 == 0 {
        IpAddr::from(<[u8; 4]>::try_from(&head[1..5]).unwrap())
    } else {
        IpAddr::from(<[u8; 16]>::try_from(&head[1..17]).unwrap())
    };
    // A real key, bent by the input, or the input itself.
    let all: Vec<&String> = f
        .admitted
        .iter()
        .map(|(k, _)| k)
        .chain(&f.refused)
        .collect();
    let mut key = match head[17] as usize % (all.len() + 1) {
        i if i < all.len() => all[i].as_bytes().to_vec(),
        _ => rest.to_vec(),
    };
    if head[17] as usize % (all.len() + 1) < all.len() {
        for pair in rest.chunks(2) {
            if let [at, b] = pair
                && !key.is_empty()
            {
                let i = *at as usize % key.len();
                key[i] = *b;
            }
        }
    }
    let integration = std::str::from_utf8(rest).ok();
    // The store treats an IPv4-mapped IPv6 address as its IPv4 address.
    let plain = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let verdict = f.store.verify_request(&VerifyRequest::new(&key, ip).integration(integration));
    if verdict.is_valid() {
        let admitted = f.admitted.iter().any(|(k, net)| {
            k.as_bytes() == key.as_slice() && net.is_none_or(|n| n.contains(&plain))
        });
        assert!(
            admitted,
            "admitted {:?} from {ip}",
            String::from_utf8_lossy(&key)
        );
    }
});
