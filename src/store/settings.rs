//! A key's settings: [`CreateOptions`] for a new key and [`KeyUpdate`]
//! for a patch of an existing one, their JSON forms (what the C library's
//! `options_json` and `patch_json` are read as), their checks, and how
//! they land in the key's record.
//!
//! A patch is applied in one atomic, durable batch: every field it names,
//! or none. Each field changed writes the event its single-field call
//! writes (`key.updated` with the same data; `whitelist.updated` for the
//! whitelist switch), in the order of the fields below, in the same batch
//! as the record.
//!
//! A new setting of a key is a field here (on both, with its check and
//! its event), a field of the record and of [`KeyInfo`](super::KeyInfo)
//! (`record.rs`);
//! the C library reads it from JSON through serde, the header and the
//! Python records describe it from the JSON Schema.

use serde::Deserialize;
use serde_json::{Value, json};

use super::record::{GenRecord, KeyRecord, Policy, QuotaRule, SCHEMA_VERSION};
use crate::error::KeyError;
use crate::events::EventKind;
use crate::key::KeyId;
use crate::policy::{self, Limit, Quota};
use crate::time::Timestamp;
use crate::whitelist::{self, Whitelist};

/// Longest key name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Largest metadata object accepted, serialised, in bytes.
pub const MAX_METADATA_LEN: usize = 16 * 1024;
/// Longest owner id accepted, in bytes.
pub const MAX_OWNER_LEN: usize = 128;
/// Longest key description accepted, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// Settings for a new key.
///
/// Its JSON form (serde) is the object of the C library's `options_json`: `{"expires_at": "2027-01-01T00:00:00Z",
/// "metadata": {...}, "whitelist": [{"name": "office", "network":
/// "198.51.100.0/24"}], "owner": "acct_42", "scopes": ["orders:read"],
/// "limits": [{"name": "burst", "limit": 100, "window_seconds": 60}],
/// "quota": {"remaining": 1000, "refill": null}, "description": "..."}`,
/// every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct CreateOptions {
    /// When the key stops working.
    pub(crate) expires_at: Option<Timestamp>,
    /// A JSON object kept with the key (up to 16 KiB serialised).
    pub(crate) metadata: Option<Value>,
    /// Named whitelist entries; any switches the restriction on.
    #[serde(deserialize_with = "entries")]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<NewEntry>"))]
    pub(crate) whitelist: Vec<(String, String)>,
    /// The account the key belongs to (1 to 128 bytes).
    pub(crate) owner: Option<String>,
    /// The scopes the key carries.
    pub(crate) scopes: Vec<String>,
    /// Its rate limits.
    pub(crate) limits: Vec<Limit>,
    /// Its quota of requests.
    pub(crate) quota: Option<Quota>,
    /// What the key is for (up to 1,024 bytes).
    pub(crate) description: Option<String>,
    /// Made disabled (an imported key its old system had revoked).
    pub(crate) disabled: bool,
}

/// A whitelist entry of a new key.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct NewEntry {
    /// What the operator calls it ("office").
    name: String,
    /// An address or a network (`198.51.100.0/24`).
    network: String,
}

/// Whitelist entries as JSON: `[{"name": "office", "network": "..."}]`.
fn entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let entries = Vec::<NewEntry>::deserialize(d)?;
    Ok(entries.into_iter().map(|e| (e.name, e.network)).collect())
}

impl CreateOptions {
    /// No expiry, no metadata, no whitelist.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The key stops working at `at`.
    #[must_use]
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// A JSON object stored with the key (customer id, plan, ...).
    #[must_use]
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The account the key belongs to: the application's own customer or
    /// account id, 1 to [`MAX_OWNER_LEN`] bytes without control characters.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The scopes the key carries (`orders:read`): a verification that
    /// requires a scope the key lacks is refused with `ScopeMissing`.
    #[must_use]
    pub fn scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a rate limit (see [`Limit`]).
    #[must_use]
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// A quota of requests (see [`Quota`]).
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// What the key is for, in the operator's words (up to
    /// [`MAX_DESCRIPTION_LEN`](crate::MAX_DESCRIPTION_LEN) bytes).
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Made disabled: it admits nobody until enabled (an imported key
    /// that its old system had revoked).
    #[must_use]
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.disabled = disabled;
        self
    }

    /// Adds a named whitelist entry and restricts the key to its entries.
    #[must_use]
    pub fn restrict_to(mut self, name: impl Into<String>, ip_or_cidr: impl Into<String>) -> Self {
        self.whitelist.push((name.into(), ip_or_cidr.into()));
        self
    }
}

impl CreateOptions {
    /// Every setting checked (the scopes in their stored form), before
    /// anything is hashed or written; the whitelist, made.
    pub(crate) fn checked(
        mut self,
        name: &str,
        now: i64,
    ) -> Result<(CreateOptions, Whitelist), KeyError> {
        validate_name(name)?;
        self.scopes = policy::checked_scopes(&self.scopes)?;
        policy::check_limits(&self.limits)?;
        if let Some(q) = &self.quota {
            q.check()?;
        }
        validate_metadata(self.metadata.as_ref())?;
        validate_expiry(self.expires_at)?;
        if let Some(owner) = &self.owner {
            validate_owner(owner)?;
        }
        validate_description(self.description.as_deref())?;
        let mut wl = Whitelist {
            enabled: !self.whitelist.is_empty(),
            entries: Vec::new(),
        };
        for (entry_name, network) in &self.whitelist {
            let entry = whitelist::new_entry(&wl, entry_name, network, now)
                .map_err(|e| KeyError::InvalidInput(e.to_string()))?;
            wl.entries.push(entry);
        }
        Ok((self, wl))
    }

    /// A new key's record: generation 1 holding `first`, these (checked)
    /// settings and the whitelist `wl` made of them.
    pub(crate) fn into_record(
        self,
        id: KeyId,
        name: String,
        wl: Whitelist,
        now: i64,
        first: GenRecord,
    ) -> KeyRecord {
        KeyRecord {
            v: SCHEMA_VERSION,
            id,
            name,
            created_at: now,
            updated_at: now,
            rotated_at: None,
            disabled: self.disabled,
            expires_at: self.expires_at.map(Timestamp::unix_millis),
            metadata: self.metadata,
            owner: self.owner,
            generations: vec![first],
            whitelist: wl,
            policy: Policy {
                scopes: self.scopes,
                limits: self.limits,
                quota: self.quota.map(|q| QuotaRule::new(q.refill)),
            },
            extra: super::record::Extra {
                description: self.description,
            },
        }
    }
}

/// A patch of a key's settings: a field left out is left as it is; one
/// cleared (`None`, JSON `null`) is removed where that means something.
///
/// For [`Store::update`](crate::Store::update); the `Some(None)`-style
/// setters (`expires_at(None)`, `owner(None)`, ...) clear.
///
/// ```
/// # use keyward::{KeyUpdate, Timestamp};
/// let patch = KeyUpdate::new()
///     .name("CRM sync (EU)")
///     .disabled(false)
///     .expires_at(None)
///     .scopes(["orders:read"]);
/// # let _ = patch;
/// ```
///
/// Its JSON form (serde) is the C library's `patch_json`: an object with
/// the fields of [`CreateOptions`]' form (and `name`, `disabled`,
/// `whitelist_enabled`), each left out (unchanged), `null` (cleared: no
/// expiry, metadata, owner, quota, description; no limits or scopes) or a
/// value; `null` is refused for `name`, `disabled` and `whitelist_enabled`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
// A field is `None` when the patch leaves it alone, `Some(None)` when it
// clears it: three cases, as the C and Python patches have (absent, null).
#[allow(clippy::option_option)]
pub struct KeyUpdate {
    /// A new name (`null` refused).
    #[serde(deserialize_with = "not_null")]
    pub(crate) name: Option<String>,
    /// Disabled (admits nobody) or enabled (`null` refused).
    #[serde(deserialize_with = "not_null")]
    pub(crate) disabled: Option<bool>,
    /// The expiry; `null`: never.
    #[serde(deserialize_with = "present")]
    pub(crate) expires_at: Option<Option<Timestamp>>,
    /// The metadata object, replaced whole; `null` removes it.
    #[serde(deserialize_with = "present")]
    pub(crate) metadata: Option<Option<Value>>,
    /// The account; `null`: none.
    #[serde(deserialize_with = "present")]
    pub(crate) owner: Option<Option<String>>,
    /// The scopes, replacing the key's; `null`: none.
    #[serde(deserialize_with = "null_is_empty")]
    pub(crate) scopes: Option<Vec<String>>,
    /// The rate limits, replacing the key's; `null`: none.
    #[serde(deserialize_with = "null_is_empty")]
    pub(crate) limits: Option<Vec<Limit>>,
    /// The quota, from now; `null` removes it.
    #[serde(deserialize_with = "present")]
    pub(crate) quota: Option<Option<Quota>>,
    /// "Restrict this key to whitelisted IPs" (`null` refused).
    #[serde(deserialize_with = "not_null")]
    pub(crate) whitelist_enabled: Option<bool>,
    /// What the key is for; `null` removes it.
    #[serde(deserialize_with = "present")]
    pub(crate) description: Option<Option<String>>,
}

/// A field that is there (`null` included): `Some` of what it holds.
#[allow(clippy::option_option, clippy::unnecessary_wraps)]
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A field that has no "none" to clear it to: `null` is refused.
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)?.map(Some).ok_or_else(|| {
        serde::de::Error::custom("this field cannot be null (leave it out to keep it)")
    })
}

/// A list whose `null` clears it (the empty list).
fn null_is_empty<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default()))
}

impl KeyUpdate {
    /// A patch that changes nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the patch names no field.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The key's name (1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Disabled (admits nobody) or enabled.
    #[must_use]
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.disabled = Some(disabled);
        self
    }

    /// The expiry; `None` clears it, a time in the past expires the key now.
    #[must_use]
    pub fn expires_at(mut self, at: Option<Timestamp>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The metadata object, replaced whole; `None` clears it.
    #[must_use]
    pub fn metadata(mut self, metadata: Option<Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The account the key belongs to; `None`: no account.
    #[must_use]
    pub fn owner<S: Into<String>>(mut self, owner: Option<S>) -> Self {
        self.owner = Some(owner.map(Into::into));
        self
    }

    /// The scopes, replacing the key's (an empty list: none).
    #[must_use]
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// The rate limits, replacing the key's (an empty list: none; a limit
    /// kept by name keeps its shared count).
    #[must_use]
    pub fn limits(mut self, limits: impl Into<Vec<Limit>>) -> Self {
        self.limits = Some(limits.into());
        self
    }

    /// The quota: `remaining` requests from now, in every process; `None`
    /// removes it.
    #[must_use]
    pub fn quota(mut self, quota: Option<Quota>) -> Self {
        self.quota = Some(quota);
        self
    }

    /// "Restrict this key to whitelisted IPs", on or off.
    #[must_use]
    pub fn whitelist_enabled(mut self, enabled: bool) -> Self {
        self.whitelist_enabled = Some(enabled);
        self
    }

    /// What the key is for; `None` clears it.
    #[must_use]
    pub fn description<S: Into<String>>(mut self, description: Option<S>) -> Self {
        self.description = Some(description.map(Into::into));
        self
    }

    /// Every field checked as its single-field call checks it, before
    /// anything is written; the scopes in their stored form.
    pub(crate) fn checked(mut self) -> Result<Self, KeyError> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(Some(owner)) = &self.owner {
            validate_owner(owner)?;
        }
        if let Some(at) = self.expires_at {
            validate_expiry(at)?;
        }
        if let Some(metadata) = &self.metadata {
            validate_metadata(metadata.as_ref())?;
        }
        if let Some(scopes) = &self.scopes {
            self.scopes = Some(policy::checked_scopes(scopes)?);
        }
        if let Some(limits) = &self.limits {
            policy::check_limits(limits)?;
        }
        if let Some(Some(quota)) = &self.quota {
            quota.check()?;
        }
        if let Some(description) = &self.description {
            validate_description(description.as_deref())?;
        }
        Ok(self)
    }
}

impl KeyUpdate {
    /// The quota setting the patch makes, chosen once (a new setting is a
    /// new serial, which voids every lease of the old one): absent, removed,
    /// or a new rule, as the patch's quota is.
    #[allow(clippy::option_option)]
    pub(crate) fn quota_rule(&self) -> Option<Option<QuotaRule>> {
        self.quota.map(|q| q.map(|q| QuotaRule::new(q.refill)))
    }

    /// Applies the (checked) patch to `rec`, with `quota_rule` for its
    /// quota: the events it writes, one per field changed.
    #[allow(clippy::option_option)]
    pub(crate) fn apply(
        &self,
        rec: &mut KeyRecord,
        quota_rule: Option<Option<QuotaRule>>,
    ) -> Vec<(EventKind, Value)> {
        let mut told: Vec<(EventKind, Value)> = Vec::new();
        let mut updated = |data: Value| told.push((EventKind::KeyUpdated, data));
        if let Some(name) = &self.name {
            let old = std::mem::replace(&mut rec.name, name.clone());
            updated(json!({ "renamed_from": old }));
        }
        if let Some(disabled) = self.disabled {
            rec.disabled = disabled;
            updated(json!({ "disabled": disabled }));
        }
        if let Some(at) = self.expires_at {
            rec.expires_at = at.map(Timestamp::unix_millis);
            updated(json!({ "expires_at": at }));
        }
        if let Some(metadata) = &self.metadata {
            rec.metadata.clone_from(metadata);
            updated(json!({ "metadata": "changed" }));
        }
        if let Some(owner) = &self.owner {
            let old = std::mem::replace(&mut rec.owner, owner.clone());
            updated(json!({ "owner_from": old, "owner_to": owner }));
        }
        if let Some(scopes) = &self.scopes {
            rec.policy.scopes.clone_from(scopes);
            updated(json!({ "scopes": scopes }));
        }
        if let Some(limits) = &self.limits {
            rec.policy.limits.clone_from(limits);
            updated(json!({ "limits": limits }));
        }
        if let (Some(quota), Some(rule)) = (self.quota, quota_rule) {
            rec.policy.quota = rule;
            updated(json!({ "quota": quota }));
        }
        if let Some(description) = &self.description {
            rec.extra.description.clone_from(description);
            updated(json!({ "description": "changed" }));
        }
        if let Some(enabled) = self.whitelist_enabled {
            rec.whitelist.enabled = enabled;
            told.push((EventKind::WhitelistUpdated, json!({ "enabled": enabled })));
        }
        told
    }
}

pub(crate) fn validate_owner(owner: &str) -> Result<(), KeyError> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(KeyError::InvalidInput(format!(
            "an owner is 1 to {MAX_OWNER_LEN} bytes (got {})",
            owner.len()
        )));
    }
    if owner.chars().any(char::is_control) {
        return Err(KeyError::InvalidInput(
            "an owner must not contain control characters".into(),
        ));
    }
    Ok(())
}

pub(crate) fn validate_name(name: &str) -> Result<(), KeyError> {
    if name.trim().is_empty() {
        return Err(KeyError::InvalidInput(
            "a key name must not be empty".into(),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(KeyError::InvalidInput(format!(
            "a key name is at most {MAX_NAME_LEN} bytes (got {})",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(KeyError::InvalidInput(
            "a key name must not contain control characters".into(),
        ));
    }
    Ok(())
}

pub(crate) fn validate_metadata(metadata: Option<&Value>) -> Result<(), KeyError> {
    let Some(m) = metadata else { return Ok(()) };
    if !m.is_object() {
        return Err(KeyError::InvalidInput(
            "metadata must be a JSON object".into(),
        ));
    }
    let len = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
    if len > MAX_METADATA_LEN {
        return Err(KeyError::InvalidInput(format!(
            "metadata is at most {MAX_METADATA_LEN} bytes serialised (got {len})"
        )));
    }
    Ok(())
}

pub(crate) fn validate_description(description: Option<&str>) -> Result<(), KeyError> {
    match description {
        Some(d) if d.len() > MAX_DESCRIPTION_LEN => Err(KeyError::InvalidInput(format!(
            "a description is at most {MAX_DESCRIPTION_LEN} bytes (got {})",
            d.len()
        ))),
        _ => Ok(()),
    }
}

/// An expiry RFC 3339 can write (years 0 to 9999).
pub(crate) fn validate_expiry(at: Option<Timestamp>) -> Result<(), KeyError> {
    match at {
        Some(t) if !t.is_in_range() => Err(KeyError::InvalidInput(format!(
            "expires_at {} ms since the epoch is outside years 0 to 9999",
            t.unix_millis()
        ))),
        _ => Ok(()),
    }
}

/// Whether a record's settings are what the API accepts (a record an
/// attached process asks the owner to write is checked with this).
pub(crate) fn check_record(rec: &KeyRecord) -> Result<(), String> {
    let invalid = |e: KeyError| e.to_string();
    validate_name(&rec.name).map_err(invalid)?;
    validate_metadata(rec.metadata.as_ref()).map_err(invalid)?;
    validate_description(rec.extra.description.as_deref()).map_err(invalid)?;
    if let Some(owner) = &rec.owner {
        validate_owner(owner).map_err(invalid)?;
    }
    if policy::checked_scopes(&rec.policy.scopes).map_err(invalid)? != rec.policy.scopes {
        return Err("scopes are stored sorted, without repeats".into());
    }
    policy::check_limits(&rec.policy.limits).map_err(invalid)?;
    if let Some(refill) = rec.policy.quota.and_then(|q| q.refill) {
        Quota::new(0)
            .refilled(refill.amount, refill.period)
            .check()
            .map_err(invalid)?;
    }
    if rec
        .expires_at
        .is_some_and(|at| !Timestamp::from_unix_millis(at).is_in_range())
    {
        return Err("an expiry outside years 0 to 9999".into());
    }
    Ok(())
}
