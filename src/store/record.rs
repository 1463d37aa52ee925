//! The stored records of a store (one per key, one for the store itself),
//! their encoding, and the views built from them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::key::{self, KeyId, PlaintextKey};
use crate::policy::{Limit, Quota, Refill};
use crate::time::Timestamp;
use crate::whitelist::Whitelist;

/// The version written into new records; newer ones are refused on read.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// The Overview tab of one key. Never holds secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct KeyInfo {
    /// Public, stable id.
    pub id: KeyId,
    /// What the operator called it.
    pub name: String,
    /// `kw_4fK9xQ2mLp7A_…` + the last four characters of the current key.
    pub masked: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last regenerated.
    pub rotated_at: Option<Timestamp>,
    /// When it last admitted a request.
    pub last_used_at: Option<Timestamp>,
    /// Current generation: 1 at creation, +1 per regeneration.
    pub generation: u32,
    /// Disabled keys admit nobody.
    pub disabled: bool,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// Whether requests are restricted to whitelisted IPs.
    pub whitelist_enabled: bool,
    /// Until when an older secret still works (grace of a regeneration).
    pub grace_until: Option<Timestamp>,
    /// The JSON object given at creation or later.
    pub metadata: Option<Value>,
    /// The account the key belongs to (the application's customer id).
    pub owner: Option<String>,
    /// What the key may be used for; empty: no scope is required of it.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Its rate limits.
    #[serde(default)]
    pub limits: Vec<Limit>,
    /// Its quota, with `remaining` as storage and this process hold it now.
    pub quota: Option<Quota>,
    /// What the key is for, in the operator's words.
    pub description: Option<String>,
}

/// A key as created or regenerated: its info, and the plaintext, shown once.
#[derive(Debug)]
#[non_exhaustive]
pub struct CreatedKey {
    /// The key's Overview.
    pub info: KeyInfo,
    /// The plaintext key. Hand it over now: the store keeps only a hash.
    pub key: PlaintextKey,
}

/// The store's own record: format version and key prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MetaRecord {
    pub v: u32,
    pub prefix: String,
    /// The key of the store's pre-check tags (older stores get one when
    /// next opened).
    #[serde(default)]
    pub tag_key: Option<[u8; 32]>,
}

/// One generation (secret) of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GenRecord {
    pub n: u32,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub grace_until: Option<i64>,
    /// argon2id PHC string of the secret.
    pub phc: String,
    /// Pre-check tag of the secret.
    pub tag: u32,
    /// Whether `tag` is keyed with the store's tag key (else the legacy constant).
    #[serde(default)]
    pub store_tag: bool,
    pub last4: String,
    /// How verification finds an imported key's generation from the key
    /// as presented (which is not in this store's format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<Lookup>,
}

/// How a key imported from another system is found, without a scan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Lookup {
    /// A keyed hash of the whole key (imported as plaintext).
    Keyed([u8; 32]),
    /// The SHA-256 of the whole key (imported as its SHA-256).
    Sha256([u8; 32]),
    /// The key's first characters (imported as a bcrypt or argon2 hash
    /// with the prefix the other system kept beside it).
    Prefix(String),
}

impl Lookup {
    /// Its row in the imports table.
    pub(crate) fn row(&self) -> Vec<u8> {
        match self {
            Lookup::Keyed(d) => [&b"k"[..], d].concat(),
            Lookup::Sha256(d) => [&b"s"[..], d].concat(),
            Lookup::Prefix(p) => [b"p", p.as_bytes()].concat(),
        }
    }
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub v: u32,
    pub id: KeyId,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub rotated_at: Option<i64>,
    pub disabled: bool,
    pub expires_at: Option<i64>,
    pub metadata: Option<Value>,
    /// The account the key belongs to (records written before owners
    /// existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Newest first; the first is current.
    pub generations: Vec<GenRecord>,
    pub whitelist: Whitelist,
    /// Scopes, rate limits and quota (format 3 sections).
    #[serde(default)]
    pub policy: Policy,
    /// The settings added since (format 3's `Extra` section).
    #[serde(default)]
    pub extra: Extra,
}

/// A key's settings that need no index and no section of their own: kept
/// in format 3 as one JSON object, so a new one is a field here and
/// records written before it read as its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Extra {
    /// What the key is for ([`KeyInfo::description`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a key may do beyond being admitted (see [`crate::policy`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Policy {
    /// Sorted, without repeats.
    pub scopes: Vec<String>,
    pub limits: Vec<Limit>,
    pub quota: Option<QuotaRule>,
}

/// A key's quota as its record holds it: the refill, and which setting it
/// is. `remaining` lives in its own row ([`crate::backend::Table::Budgets`]),
/// taken from in leases; a new setting (a new `serial`) voids every lease
/// of the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QuotaRule {
    pub serial: u64,
    pub refill: Option<Refill>,
}

impl QuotaRule {
    /// A new setting with `refill`.
    pub(crate) fn new(refill: Option<Refill>) -> Self {
        QuotaRule {
            serial: rand::random::<u64>() | 1,
            refill,
        }
    }

    /// The refill period holding `now` (0 without a refill).
    pub(crate) fn period_of(&self, now: i64) -> i64 {
        self.refill.map_or(0, |r| r.period.period_of(now))
    }
}

impl KeyRecord {
    pub(crate) fn current(&self) -> &GenRecord {
        &self.generations[0]
    }

    pub(crate) fn masked(&self, prefix: &str) -> String {
        key::mask(prefix, &self.id, &self.current().last4)
    }

    /// The key as an event tells of it.
    pub(crate) fn subject(&self, prefix: &str) -> crate::events::Subject<'_> {
        crate::events::Subject {
            id: self.id,
            name: &self.name,
            masked: self.masked(prefix),
            owner: self.owner.as_deref(),
        }
    }

    pub(crate) fn info(&self, prefix: &str, last_used_at: Option<Timestamp>, now: i64) -> KeyInfo {
        let ts = Timestamp::from_unix_millis;
        let cur = self.current();
        KeyInfo {
            id: self.id,
            name: self.name.clone(),
            masked: self.masked(prefix),
            created_at: ts(self.created_at),
            rotated_at: self.rotated_at.map(ts),
            last_used_at,
            generation: cur.n,
            disabled: self.disabled,
            expires_at: self.expires_at.map(ts),
            whitelist_enabled: self.whitelist.enabled,
            grace_until: self.generations[1..]
                .iter()
                .filter_map(|g| g.grace_until)
                .filter(|&g| g > now)
                .max()
                .map(ts),
            metadata: self.metadata.clone(),
            owner: self.owner.clone(),
            scopes: self.policy.scopes.clone(),
            limits: self.policy.limits.clone(),
            // What remains is in its own row: the engine fills it in.
            quota: self.policy.quota.map(|q| Quota {
                remaining: 0,
                refill: q.refill,
            }),
            description: self.extra.description.clone(),
        }
    }

    /// This key's row in the owner index, when it has an owner.
    pub(crate) fn owner_row(&self) -> Option<Vec<u8>> {
        self.owner.as_deref().map(|o| owner_row(o, &self.id))
    }
}

/// The owner index row of key `id` owned by `owner`.
pub(crate) fn owner_row(owner: &str, id: &KeyId) -> Vec<u8> {
    let mut row = owner_prefix(owner);
    row.extend_from_slice(id.as_bytes());
    row
}

/// Where `owner`'s rows start in the owner index (owners hold no NUL).
pub(crate) fn owner_prefix(owner: &str) -> Vec<u8> {
    let mut row = Vec::with_capacity(owner.len() + 13);
    row.extend_from_slice(owner.as_bytes());
    row.push(0);
    row
}
