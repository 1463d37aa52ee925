//! A walk through keyward on a temporary store: the API-key settings panel,
//! step by step.
//!
//! Run: `cargo run --example tour`

use std::error::Error;
use std::net::IpAddr;
use std::time::Duration;

use keyward::{
    CreateOptions, KeyInfo, Limit, Quota, RefillPeriod, Refusal, Store, Usage, Verdict,
    VerifyRequest,
};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys");
    let store = Store::open(&path)?;
    println!("Opened a store at {}\n", path.display());

    step("1. Create two keys (the plaintext is shown once; only an argon2id hash is stored)");
    let crm = store.create("CRM sync", CreateOptions::new())?;
    let zap = store.create(
        "Zapier",
        CreateOptions::new().metadata(serde_json::json!({ "customer": "acme", "plan": "pro" })),
    )?;
    println!("   CRM sync  {}", crm.key.as_str());
    println!("   Zapier    {}", zap.key.as_str());
    println!("   (Debug output of a key: {:?})\n", crm.key);
    overview(&store.list()?);

    step("2. Verify from two IPs and an integration");
    let office: IpAddr = "198.51.100.20".parse()?;
    let cloud: IpAddr = "203.0.113.7".parse()?;
    show(
        "CRM sync from 198.51.100.20 (HubSpot)",
        store.verify(crm.key.as_str(), office, Some("HubSpot/3.1")),
    );
    show(
        "CRM sync from 203.0.113.7 (n8n)",
        store.verify(crm.key.as_str(), cloud, Some("n8n")),
    );
    show(
        "Zapier from 203.0.113.7",
        store.verify(zap.key.as_str(), cloud, Some("Zapier")),
    );
    let mut typo = crm.key.as_str().to_string();
    typo.pop();
    show("a truncated key", store.verify(&typo, cloud, None));

    step("3. The Usage tab of CRM sync");
    usage(&store.usage(&crm.info.id)?);

    step("4. Restrict CRM sync to whitelisted IPs, with a named entry");
    let entry = store.add_whitelist_entry(&crm.info.id, "Head office", "198.51.100.0/24")?;
    store.set_whitelist_enabled(&crm.info.id, true)?;
    println!(
        "   whitelist on; entry {} \"{}\" {}",
        entry.id, entry.name, entry.network
    );
    show(
        "CRM sync from the office",
        store.verify(crm.key.as_str(), office, Some("HubSpot/3.1")),
    );
    show(
        "CRM sync from 203.0.113.7",
        store.verify(crm.key.as_str(), cloud, Some("n8n")),
    );

    step("5. Regenerate CRM sync: the old key stops working at once");
    let fresh = store.regenerate(&crm.info.id, Duration::ZERO)?;
    println!("   new key   {}", fresh.key.as_str());
    show(
        "old key from the office",
        store.verify(crm.key.as_str(), office, Some("HubSpot/3.1")),
    );
    show(
        "new key from the office",
        store.verify(fresh.key.as_str(), office, Some("HubSpot/3.1")),
    );

    step("6. Regenerate Zapier with a one-hour grace period");
    let zap2 = store.regenerate(&zap.info.id, Duration::from_secs(3600))?;
    show(
        "old Zapier key (in grace)",
        store.verify(zap.key.as_str(), cloud, Some("Zapier")),
    );
    let updated: IpAddr = "192.0.2.44".parse()?;
    show(
        "new Zapier key from 192.0.2.44",
        store.verify(zap2.key.as_str(), updated, Some("Zapier")),
    );
    let info = store.get(&zap.info.id)?;
    println!(
        "   old secret works until {}",
        info.grace_until.map_or("-".into(), |t| t.to_string())
    );
    println!("   clients still on the old secret:");
    for ip in store
        .usage(&zap.info.id)?
        .ips
        .iter()
        .filter(|r| r.stale_secret)
    {
        println!(
            "     {} ({})",
            ip.ip,
            ip.last_integration.as_deref().unwrap_or("-")
        );
    }
    println!();
    overview(&store.list()?);

    step("7. Delete Zapier");
    store.delete(&zap.info.id)?;
    show(
        "new Zapier key after delete",
        store.verify(zap2.key.as_str(), updated, Some("Zapier")),
    );
    overview(&store.list()?);

    step("8. A partner key with a rate limit, a quota and a scope");
    let partner = store.create(
        "Partner",
        CreateOptions::new()
            .limit(Limit::new("burst", 3, Duration::from_secs(60)))
            .quota(Quota::new(4).refilled(1000, RefillPeriod::Monthly))
            .scopes(["orders:read"]),
    )?;
    for (what, scope) in [
        ("orders:write (not its scope)", "orders:write"),
        ("orders:read", "orders:read"),
        ("orders:read", "orders:read"),
        ("orders:read", "orders:read"),
        ("orders:read (a 4th within a minute)", "orders:read"),
    ] {
        show(
            what,
            store.verify_request(
                &VerifyRequest::new(partner.key.as_str(), cloud)
                    .integration("Partner")
                    .scope(scope),
            ),
        );
    }
    let info = store.get(&partner.info.id)?;
    println!(
        "   quota left {} (a missing scope and a rate-limited request took none)",
        info.quota.map_or(0, |q| q.remaining)
    );
    let t = store.usage(&partner.info.id)?.totals;
    println!(
        "   allowed {}  scope_missing {}  rate_limited {}\n",
        t.allowed, t.scope_missing, t.rate_limited
    );

    step("9. The outbox: one event per change, no secrets");
    for e in store.events(0, 100)? {
        println!(
            "   #{:<3} {:<18} {} {}",
            e.seq,
            e.kind.as_str(),
            e.masked,
            e.data
        );
    }
    store.close()?;
    println!("\nClosed. Every change above was durable before its call returned.");
    Ok(())
}

fn step(title: &str) {
    println!("== {title}");
}

fn show(what: &str, verdict: Verdict) {
    match verdict {
        Verdict::Valid(g) if g.in_grace => {
            println!(
                "   {what:<40} VALID (generation {}, in grace)",
                g.generation
            );
        }
        Verdict::Valid(g) => println!("   {what:<40} VALID (generation {})", g.generation),
        Verdict::Denied(Refusal { denial: d, .. }) => println!("   {what:<40} DENIED: {d}"),
    }
}

fn overview(keys: &[KeyInfo]) {
    println!(
        "   {:<10} {:<26} {:>3}  {:<9} {:<24}",
        "name", "key", "gen", "whitelist", "last used"
    );
    for k in keys {
        println!(
            "   {:<10} {:<26} {:>3}  {:<9} {:<24}",
            k.name,
            k.masked,
            k.generation,
            if k.whitelist_enabled { "on" } else { "off" },
            k.last_used_at.map_or("never".into(), |t| t.to_string()),
        );
    }
    println!();
}

fn usage(u: &Usage) {
    let t = &u.totals;
    println!(
        "   allowed {}  denied {} (ip_not_allowed {}, rotated {})",
        t.allowed, t.denied, t.ip_not_allowed, t.rotated
    );
    for ip in &u.ips {
        println!(
            "   ip {:<16} allowed {:<3} denied {:<3} via {:<12} stale secret: {}",
            ip.ip.to_string(),
            ip.allowed,
            ip.denied,
            ip.last_integration.as_deref().unwrap_or("-"),
            ip.stale_secret
        );
    }
    for i in &u.integrations {
        println!(
            "   integration {:<12} requests {:<3} ips {:?}",
            i.name, i.count, i.ips
        );
    }
    println!();
}
