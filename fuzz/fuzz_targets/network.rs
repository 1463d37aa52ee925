//! Whitelist entries (IP or CIDR) and client addresses: any text, never a
//! panic; an accepted entry admits exactly the addresses in its network.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (ip_bytes, text) = data.split_at(16);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let v4: [u8; 4] = ip_bytes[..4].try_into().unwrap();
    let v6: [u8; 16] = ip_bytes.try_into().unwrap();
    let client = if ip_bytes[15] % 2 == 0 {
        IpAddr::from(v4)
    } else {
        IpAddr::from(v6)
    };
    let Ok(net) = keyward::fuzzing::parse_network(text) else {
        return;
    };
    // What the store keeps reads back the same.
    assert_eq!(keyward::fuzzing::parse_network(&net.to_string()), Ok(net));
    let _ = net.contains(&client);
    // Client addresses as the C ABI takes them: text.
    let _ = text.parse::<IpAddr>();
});
