//! `keyward verify KEY --ip IP`: checks a key as a server would.

use std::net::IpAddr;

use keyward::{Refusal, Store, Verdict, VerifyRequest};
use serde_json::{Value, json};

use crate::{Out, Result, invalid};

/// Exit 0 when the key is admitted, 1 when denied.
pub(crate) fn verify_command(
    store: &Store,
    key: &str,
    ip: &str,
    (integration, scope): (Option<&str>, Option<&str>),
    out: &Out,
) -> Result<u8> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| invalid(format!("--ip {ip:?} is not an IP address")))?;
    let v = store.verify_request(
        &VerifyRequest::new(key, ip)
            .integration(integration)
            .scope(scope),
    );
    if out.json {
        out.json(&verdict_json(&v));
    } else {
        let account = |g: &keyward::Grant| {
            g.owner
                .as_deref()
                .map(|o| format!(", account {}", crate::shown::text(o)))
                .unwrap_or_default()
        };
        match &v {
            Verdict::Valid(g) if g.in_grace => println!(
                "valid: key {} generation {}{} (an old secret, still inside its grace period)",
                g.key_id,
                g.generation,
                account(g)
            ),
            Verdict::Valid(g) => println!(
                "valid: key {} generation {}{}",
                g.key_id,
                g.generation,
                account(g)
            ),
            Verdict::Denied(Refusal { denial: d, .. }) => println!("denied: {d}"),
        }
    }
    Ok(u8::from(!v.is_valid()))
}

fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Valid(g) => json!({
            "valid": true, "denial": null, "key_id": g.key_id, "generation": g.generation, "in_grace": g.in_grace,
            "owner": g.owner, "scopes": g.scopes()
        }),
        Verdict::Denied(Refusal {
            denial: d,
            key_id,
            owner,
            ..
        }) => json!({
            "valid": false, "denial": d.as_str(), "detail": d, "retry_after": d.retry_after(),
            "key_id": key_id, "owner": owner
        }),
    }
}
