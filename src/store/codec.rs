//! How key records are laid out in storage.
//!
//! Format 2 (written now): the byte `2`, then the record in postcard (a
//! compact binary serde format): integers as varints, strings with their
//! length, and each argon2id hash as its cost numbers, salt and output
//! bytes instead of its PHC text (a hash whose PHC text would not come
//! back byte for byte is kept as text). About half the size of format 1.
//!
//! Format 3: format 2 followed by a list of sections (postcard too), each
//! tagged by its kind; written only for a record that has one (today: the
//! lookups of a key imported from another system), so every other record
//! stays in format 2. New kinds of section are added at the end of
//! [`Section`].
//!
//! Format 1 (the first release): the record as a JSON object. Still read;
//! a record is rewritten in format 2 the next time it changes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::{Extra, GenRecord, KeyRecord, Lookup, Policy, QuotaRule, SCHEMA_VERSION};
use crate::backend::StorageError;
use crate::key::KeyId;
use crate::policy::Limit;
use crate::time::Timestamp;
use crate::verifier::{Argon2idParts, SecretHash};
use crate::whitelist::{Whitelist, WhitelistEntry};

/// The first byte of a format 2 record (a JSON record starts with `{`).
const FORMAT_2: u8 = 2;
/// The first byte of a format 3 record.
const FORMAT_3: u8 = 3;

/// Each imported generation's number and lookup.
type Lookups = Vec<(u32, Lookup)>;

/// One section of what follows the record in format 3.
#[derive(Serialize, Deserialize)]
enum Section {
    /// The lookups of the record's imported generations.
    Lookups(Lookups),
    /// The key's scopes.
    Scopes(Vec<String>),
    /// The key's rate limits: name, limit, window in milliseconds.
    Limits(Vec<(String, u64, u64)>),
    /// The key's quota setting.
    Quota(QuotaRule),
    /// The settings of [`Extra`] as a JSON object: fields added to it
    /// later read as their defaults from records written before.
    Extra(String),
}

/// What format 3's sections hold.
#[derive(Default)]
pub(crate) struct Sections {
    pub lookups: Lookups,
    pub policy: Policy,
    pub extra: Extra,
}

fn sections_of(trailer: &[u8]) -> Result<Sections, StorageError> {
    let sections: Vec<Section> = postcard::from_bytes(trailer).map_err(unreadable)?;
    let mut out = Sections::default();
    for s in sections {
        match s {
            Section::Lookups(l) => out.lookups.extend(l),
            Section::Scopes(s) => out.policy.scopes = s,
            Section::Limits(l) => {
                out.policy.limits = l
                    .into_iter()
                    .map(|(name, limit, window_ms)| {
                        Limit::new(name, limit, std::time::Duration::from_millis(window_ms))
                    })
                    .collect();
            }
            Section::Quota(q) => out.policy.quota = Some(q),
            Section::Extra(json) => out.extra = serde_json::from_str(&json).map_err(unreadable)?,
        }
    }
    Ok(out)
}

/// The sections of `rec`, none when it needs none (format 2).
fn sections_for(rec: &KeyRecord) -> Vec<Section> {
    let lookups: Lookups = rec
        .generations
        .iter()
        .filter_map(|g| Some((g.n, g.lookup.clone()?)))
        .collect();
    let p = &rec.policy;
    let mut out = Vec::new();
    if !lookups.is_empty() {
        out.push(Section::Lookups(lookups));
    }
    if !p.scopes.is_empty() {
        out.push(Section::Scopes(p.scopes.clone()));
    }
    if !p.limits.is_empty() {
        out.push(Section::Limits(
            p.limits
                .iter()
                .map(|l| (l.name.clone(), l.limit, l.window.as_millis() as u64))
                .collect(),
        ));
    }
    if let Some(q) = p.quota {
        out.push(Section::Quota(q));
    }
    if rec.extra != Extra::default() {
        out.push(Section::Extra(
            serde_json::to_string(&rec.extra).expect("plain data serialises"),
        ));
    }
    out
}

#[derive(Serialize, Deserialize)]
struct Record2 {
    v: u32,
    id: KeyId,
    name: String,
    created_at: i64,
    updated_at: i64,
    rotated_at: Option<i64>,
    disabled: bool,
    expires_at: Option<i64>,
    /// The metadata object as JSON text.
    metadata: Option<String>,
    owner: Option<String>,
    generations: Vec<Gen2>,
    whitelist_enabled: bool,
    entries: Vec<Entry2>,
}

#[derive(Serialize, Deserialize)]
struct Gen2 {
    n: u32,
    created_at: i64,
    retired_at: Option<i64>,
    grace_until: Option<i64>,
    hash: Hash2,
    tag: u32,
    store_tag: bool,
    last4: String,
}

/// A secret's hash.
#[derive(Serialize, Deserialize)]
enum Hash2 {
    /// `$argon2id$v=19$m=M,t=T,p=P$<salt>$<output>`, as numbers and bytes.
    Argon2id {
        m: u32,
        t: u32,
        p: u32,
        #[serde(with = "serde_bytes")]
        salt: Vec<u8>,
        #[serde(with = "serde_bytes")]
        output: Vec<u8>,
    },
    /// Any other PHC string, verbatim.
    Text(String),
}

#[derive(Serialize, Deserialize)]
struct Entry2 {
    id: String,
    name: String,
    network: String,
    created_at: i64,
}

impl Hash2 {
    fn from_phc(phc: &str) -> Hash2 {
        Self::compact(phc).unwrap_or_else(|| Hash2::Text(phc.to_string()))
    }

    /// The numbers and bytes of an argon2id v19 PHC string, when its text
    /// can be written back exactly.
    fn compact(phc: &str) -> Option<Hash2> {
        let h = Argon2idParts::parse(phc)?;
        let compact = Hash2::Argon2id {
            m: h.m,
            t: h.t,
            p: h.p,
            salt: h.salt,
            output: h.output,
        };
        (compact.to_phc().as_deref() == Some(phc)).then_some(compact)
    }

    fn to_phc(&self) -> Option<String> {
        match self {
            Hash2::Text(s) => Some(s.clone()),
            Hash2::Argon2id {
                m,
                t,
                p,
                salt,
                output,
            } => Argon2idParts::to_phc(*m, *t, *p, salt, output),
        }
    }
}

/// A format 2 record read in place: what the verify index takes from
/// it, borrowed from the stored bytes (a full load of the index allocates
/// only what the index keeps). Fields in [`Record2`]'s order.
#[derive(Deserialize)]
pub(crate) struct View<'a> {
    pub v: u32,
    #[serde(borrow)]
    pub id: &'a str,
    #[serde(borrow)]
    _name: &'a str,
    _created_at: i64,
    _updated_at: i64,
    _rotated_at: Option<i64>,
    pub disabled: bool,
    pub expires_at: Option<i64>,
    #[serde(borrow)]
    _metadata: Option<&'a str>,
    #[serde(borrow)]
    pub owner: Option<&'a str>,
    #[serde(borrow)]
    pub generations: Vec<GenView<'a>>,
    pub whitelist_enabled: bool,
    #[serde(borrow)]
    pub entries: Vec<EntryView<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct GenView<'a> {
    pub n: u32,
    _created_at: i64,
    pub retired_at: Option<i64>,
    pub grace_until: Option<i64>,
    #[serde(borrow)]
    hash: HashView<'a>,
    pub tag: u32,
    pub store_tag: bool,
    #[serde(borrow)]
    _last4: &'a str,
}

#[derive(Deserialize)]
enum HashView<'a> {
    Argon2id {
        m: u32,
        t: u32,
        p: u32,
        #[serde(borrow)]
        salt: &'a [u8],
        #[serde(borrow)]
        output: &'a [u8],
    },
    Text(&'a str),
}

#[derive(Deserialize)]
pub(crate) struct EntryView<'a> {
    #[serde(borrow)]
    _id: &'a str,
    #[serde(borrow)]
    _name: &'a str,
    #[serde(borrow)]
    pub network: &'a str,
    _created_at: i64,
}

impl GenView<'_> {
    /// The hash as the index holds it.
    pub(crate) fn secret_hash(&self) -> Option<SecretHash> {
        match self.hash {
            HashView::Text(phc) => Some(SecretHash::from_phc(phc)),
            HashView::Argon2id {
                m,
                t,
                p,
                salt,
                output,
            } => SecretHash::argon2id(m, t, p, salt, output).or_else(|| {
                let phc = Argon2idParts::to_phc(m, t, p, salt, output)?;
                Some(SecretHash::Phc(phc.into()))
            }),
        }
    }
}

/// A stored record as the index reads it (on the stack, while it is read).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Stored<'a> {
    /// Format 2 or 3, read in place, with the sections of format 3.
    View(View<'a>, Sections),
    /// Format 1, decoded whole.
    Record(Box<KeyRecord>),
}

/// Reads a stored record for the index.
pub(crate) fn stored(bytes: &[u8]) -> Result<Stored<'_>, StorageError> {
    match bytes.first() {
        Some(&f @ (FORMAT_2 | FORMAT_3)) => {
            let (view, rest): (View<'_>, _) =
                postcard::take_from_bytes(&bytes[1..]).map_err(unreadable)?;
            if view.generations.is_empty() || view.v > SCHEMA_VERSION {
                return Err(StorageError::new(format!(
                    "key record {} has an unknown format",
                    view.id
                )));
            }
            let sections = if f == FORMAT_3 {
                sections_of(rest)?
            } else {
                Sections::default()
            };
            Ok(Stored::View(view, sections))
        }
        _ => KeyRecord::decode(bytes).map(|r| Stored::Record(Box::new(r))),
    }
}

fn unreadable(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::with_source("unreadable key record", e)
}

/// A stored record, in either format.
pub(crate) fn decode(bytes: &[u8]) -> Result<KeyRecord, StorageError> {
    match bytes.first() {
        Some(&FORMAT_2) => decode_2(&bytes[1..], false),
        Some(&FORMAT_3) => decode_2(&bytes[1..], true),
        _ => serde_json::from_slice(bytes).map_err(unreadable),
    }
}

fn decode_2(bytes: &[u8], with_sections: bool) -> Result<KeyRecord, StorageError> {
    let (r, rest): (Record2, _) = postcard::take_from_bytes(bytes).map_err(unreadable)?;
    let Sections {
        mut lookups,
        policy,
        extra,
    } = if with_sections {
        sections_of(rest)?
    } else {
        Sections::default()
    };
    let metadata = match r.metadata {
        Some(text) => Some(serde_json::from_str::<Value>(&text).map_err(unreadable)?),
        None => None,
    };
    let generations =
        r.generations
            .into_iter()
            .map(|g| {
                Ok(GenRecord {
                    n: g.n,
                    created_at: g.created_at,
                    retired_at: g.retired_at,
                    grace_until: g.grace_until,
                    phc: g.hash.to_phc().ok_or_else(|| {
                        StorageError::new(format!("key record {}: a bad hash", r.id))
                    })?,
                    tag: g.tag,
                    store_tag: g.store_tag,
                    last4: g.last4,
                    lookup: lookups
                        .iter()
                        .position(|(n, _)| *n == g.n)
                        .map(|i| lookups.swap_remove(i).1),
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(KeyRecord {
        v: r.v,
        id: r.id,
        name: r.name,
        created_at: r.created_at,
        updated_at: r.updated_at,
        rotated_at: r.rotated_at,
        disabled: r.disabled,
        expires_at: r.expires_at,
        metadata,
        owner: r.owner,
        generations,
        whitelist: Whitelist {
            enabled: r.whitelist_enabled,
            entries: r
                .entries
                .into_iter()
                .map(|e| WhitelistEntry {
                    id: e.id,
                    name: e.name,
                    network: e.network,
                    created_at: Timestamp::from_unix_millis(e.created_at),
                })
                .collect(),
        },
        policy,
        extra,
    })
}

/// The record in format 2.
pub(crate) fn encode(rec: &KeyRecord) -> Vec<u8> {
    let r = Record2 {
        v: rec.v,
        id: rec.id,
        name: rec.name.clone(),
        created_at: rec.created_at,
        updated_at: rec.updated_at,
        rotated_at: rec.rotated_at,
        disabled: rec.disabled,
        expires_at: rec.expires_at,
        metadata: rec.metadata.as_ref().map(Value::to_string),
        owner: rec.owner.clone(),
        generations: rec
            .generations
            .iter()
            .map(|g| Gen2 {
                n: g.n,
                created_at: g.created_at,
                retired_at: g.retired_at,
                grace_until: g.grace_until,
                hash: Hash2::from_phc(&g.phc),
                tag: g.tag,
                store_tag: g.store_tag,
                last4: g.last4.clone(),
            })
            .collect(),
        whitelist_enabled: rec.whitelist.enabled,
        entries: rec
            .whitelist
            .entries
            .iter()
            .map(|e| Entry2 {
                id: e.id.clone(),
                name: e.name.clone(),
                network: e.network.clone(),
                created_at: e.created_at.unix_millis(),
            })
            .collect(),
    };
    let sections = sections_for(rec);
    let mut out = vec![if sections.is_empty() {
        FORMAT_2
    } else {
        FORMAT_3
    }];
    out.extend(postcard::to_allocvec(&r).expect("key records serialise"));
    if !sections.is_empty() {
        out.extend(postcard::to_allocvec(&sections).expect("sections serialise"));
    }
    out
}

impl KeyRecord {
    /// A stored record, in either format (see this module).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let rec = decode(bytes)?;
        if rec.v > SCHEMA_VERSION || rec.generations.is_empty() {
            return Err(StorageError::new(format!(
                "key record {} has an unknown format",
                rec.id
            )));
        }
        Ok(rec)
    }

    /// The record as stored now (format 2).
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phc: &str) -> KeyRecord {
        KeyRecord {
            v: 1,
            id: "AbCdEfGhIjKl".parse().unwrap(),
            name: "CRM sync ✓".into(),
            created_at: 1_795_853_042_123,
            updated_at: 1_795_853_042_999,
            rotated_at: Some(-5),
            disabled: true,
            expires_at: None,
            metadata: Some(serde_json::json!({"plan": "pro", "n": [1, 2.5, null]})),
            owner: Some("acme".into()),
            generations: vec![GenRecord {
                n: 2,
                created_at: 7,
                retired_at: None,
                grace_until: Some(i64::MAX),
                phc: phc.into(),
                tag: 0xdead_beef,
                store_tag: true,
                last4: "Zz9a".into(),
                lookup: None,
            }],
            whitelist: Whitelist {
                enabled: true,
                entries: vec![WhitelistEntry {
                    id: "e1".into(),
                    name: "office".into(),
                    network: "203.0.113.0/24".into(),
                    created_at: Timestamp::from_unix_millis(99),
                }],
            },
            policy: Policy::default(),
            extra: Extra::default(),
        }
    }

    fn same(a: &KeyRecord, b: &KeyRecord) -> bool {
        serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
    }

    #[test]
    fn both_formats_read_back_every_field_and_format_2_is_smaller() {
        let hasher = crate::verifier::Argon2Params::default().hasher().unwrap();
        let phc = crate::verifier::hash_secret(&hasher, b"secret").unwrap();
        let rec = record(&phc);
        let v2 = encode(&rec);
        assert_eq!(v2[0], FORMAT_2);
        assert!(same(&decode(&v2).unwrap(), &rec));
        let v1 = serde_json::to_vec(&rec).unwrap();
        assert!(same(&decode(&v1).unwrap(), &rec));
        assert!(v2.len() * 2 < v1.len(), "{} vs {}", v2.len(), v1.len());
        assert!(crate::verifier::verify_secret(
            &decode(&v2).unwrap().generations[0].phc,
            b"secret"
        ));
    }

    #[test]
    fn the_index_reads_format_2_in_place_with_what_a_whole_decode_gives() {
        let hasher = crate::verifier::Argon2Params::default().hasher().unwrap();
        let rec = record(&crate::verifier::hash_secret(&hasher, b"secret").unwrap());
        let bytes = encode(&rec);
        let Stored::View(view, _) = stored(&bytes).unwrap() else {
            panic!("format 2 is read in place")
        };
        assert_eq!(view.id, rec.id.as_str());
        assert_eq!(view.disabled, rec.disabled);
        assert_eq!(view.expires_at, rec.expires_at);
        assert_eq!(view.owner, rec.owner.as_deref());
        assert_eq!(view.whitelist_enabled, rec.whitelist.enabled);
        assert_eq!(view.entries[0].network, "203.0.113.0/24");
        let (g, r) = (&view.generations[0], &rec.generations[0]);
        assert_eq!(
            (g.n, g.retired_at, g.grace_until, g.tag, g.store_tag),
            (r.n, r.retired_at, r.grace_until, r.tag, r.store_tag)
        );
        let hash = g.secret_hash().unwrap();
        assert!(matches!(hash, SecretHash::Argon2id { .. }));
        assert!(hash.verify(b"secret") && !hash.verify(b"secreT"));
        let json = serde_json::to_vec(&rec).unwrap();
        assert!(matches!(stored(&json).unwrap(), Stored::Record(_)));
        let text = record(
            "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA",
        );
        let bytes = encode(&text);
        let Stored::View(view, _) = stored(&bytes).unwrap() else {
            panic!()
        };
        assert!(matches!(
            view.generations[0].secret_hash(),
            Some(SecretHash::Phc(_))
        ));
    }

    #[test]
    fn an_imported_keys_lookups_make_format_3_and_read_back_both_ways() {
        let mut rec = record(&format!("$sha256${}", "ab".repeat(32)));
        rec.generations[0].lookup = Some(Lookup::Sha256([0xab; 32]));
        let bytes = encode(&rec);
        assert_eq!(bytes[0], FORMAT_3);
        let back = decode(&bytes).unwrap();
        assert!(same(&back, &rec));
        assert_eq!(back.generations[0].lookup, Some(Lookup::Sha256([0xab; 32])));
        let Stored::View(view, sections) = stored(&bytes).unwrap() else {
            panic!("format 3 is read in place")
        };
        assert_eq!(
            sections.lookups,
            vec![(rec.generations[0].n, Lookup::Sha256([0xab; 32]))]
        );
        assert!(matches!(
            view.generations[0].secret_hash(),
            Some(SecretHash::Sha256(d)) if d == [0xab; 32]
        ));
        // Without lookups: format 2, as before.
        rec.generations[0].lookup = None;
        assert_eq!(encode(&rec)[0], FORMAT_2);
    }

    #[test]
    fn scopes_limits_and_a_quota_make_format_3_and_read_back_both_ways() {
        use crate::policy::{Refill, RefillPeriod};
        let hasher = crate::verifier::Argon2Params::default().hasher().unwrap();
        let mut rec = record(&crate::verifier::hash_secret(&hasher, b"s").unwrap());
        rec.policy = Policy {
            scopes: vec!["contacts:write".into(), "orders:read".into()],
            limits: vec![
                Limit::new("burst", 100, std::time::Duration::from_mins(1)),
                Limit::new("daily", 10_000, std::time::Duration::from_hours(24)),
            ],
            quota: Some(QuotaRule {
                serial: 77,
                refill: Some(Refill {
                    amount: 500,
                    period: RefillPeriod::Monthly,
                }),
            }),
        };
        let bytes = encode(&rec);
        assert_eq!(bytes[0], FORMAT_3);
        assert_eq!(decode(&bytes).unwrap().policy, rec.policy);
        let Stored::View(_, sections) = stored(&bytes).unwrap() else {
            panic!("format 3 is read in place")
        };
        assert_eq!(sections.policy, rec.policy);
        assert!(sections.lookups.is_empty());
        // Each alone is format 3 too; none is format 2.
        for keep in 0..3 {
            let mut one = rec.clone();
            if keep != 0 {
                one.policy.scopes.clear();
            }
            if keep != 1 {
                one.policy.limits.clear();
            }
            if keep != 2 {
                one.policy.quota = None;
            }
            let bytes = encode(&one);
            assert_eq!(bytes[0], FORMAT_3);
            assert_eq!(decode(&bytes).unwrap().policy, one.policy);
        }
        rec.policy = Policy::default();
        assert_eq!(encode(&rec)[0], FORMAT_2);
    }

    #[test]
    fn a_hash_that_would_not_come_back_exactly_is_kept_as_text() {
        for phc in [
            "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA",
            "$argon2id$v=19$m=64,t=1,p=1,keyid=AAAA$c29tZXNhbHQ$aGFzaA",
            "not a phc string",
        ] {
            let rec = record(phc);
            let back = decode(&encode(&rec)).unwrap();
            assert_eq!(back.generations[0].phc, phc);
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let hasher = crate::verifier::Argon2Params::default().hasher().unwrap();
        let v2 = encode(&record(
            &crate::verifier::hash_secret(&hasher, b"s").unwrap(),
        ));
        for cut in 0..v2.len() {
            let _ = decode(&v2[..cut]);
        }
        assert!(decode(&[FORMAT_2, 0xff, 0xff]).is_err());
        assert!(decode(b"").is_err());
    }
}
