//! One patch of a key's settings ([`KeyUpdate`]), applied in one atomic,
//! durable batch: every field it names, or none. Each field changed
//! writes the event its single-field call writes (`key.updated` with the
//! same data; `whitelist.updated` for the whitelist switch), in the order
//! of the fields below, in the same batch as the record.

use serde_json::{Value, json};

use super::engine::Engine;
use super::meter;
use super::record::{KeyInfo, QuotaRule, validate_metadata, validate_name, validate_owner};
use super::write::validate_expiry;
use crate::backend::Table;
use crate::error::KeyError;
use crate::events::EventKind;
use crate::key::KeyId;
use crate::policy::{self, Limit, Quota};
use crate::time::Timestamp;

/// A patch of a key's settings for [`Store::update`](crate::Store::update):
/// a field left out is left as it is; `Some(None)`-style setters
/// (`expires_at(None)`, `owner(None)`, ...) clear what can be cleared.
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
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
// A field is `None` when the patch leaves it alone, `Some(None)` when it
// clears it: three cases, as the C and Python patches have (absent, null).
#[allow(clippy::option_option)]
pub struct KeyUpdate {
    pub(crate) name: Option<String>,
    pub(crate) disabled: Option<bool>,
    pub(crate) expires_at: Option<Option<Timestamp>>,
    pub(crate) metadata: Option<Option<Value>>,
    pub(crate) owner: Option<Option<String>>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) limits: Option<Vec<Limit>>,
    pub(crate) quota: Option<Option<Quota>>,
    pub(crate) whitelist_enabled: Option<bool>,
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

    /// Every field checked as its single-field call checks it, before
    /// anything is written; the scopes in their stored form.
    fn checked(mut self) -> Result<Self, KeyError> {
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
        Ok(self)
    }
}

impl Engine {
    /// Applies `patch` to key `id` (see [`KeyUpdate`]).
    pub(crate) fn update_key(&self, id: &KeyId, patch: KeyUpdate) -> Result<KeyInfo, KeyError> {
        let patch = patch.checked()?;
        if patch.is_empty() {
            return self.get(id);
        }
        let quota_rule = patch.quota.map(|q| q.map(|q| QuotaRule::new(q.refill)));
        let mut info = self.update_events(
            id,
            |rec, _| {
                let mut told: Vec<(EventKind, Value)> = Vec::new();
                let mut updated = |data: Value| told.push((EventKind::KeyUpdated, data));
                if let Some(name) = &patch.name {
                    let old = std::mem::replace(&mut rec.name, name.clone());
                    updated(json!({ "renamed_from": old }));
                }
                if let Some(disabled) = patch.disabled {
                    rec.disabled = disabled;
                    updated(json!({ "disabled": disabled }));
                }
                if let Some(at) = patch.expires_at {
                    rec.expires_at = at.map(Timestamp::unix_millis);
                    updated(json!({ "expires_at": at }));
                }
                if let Some(metadata) = &patch.metadata {
                    rec.metadata.clone_from(metadata);
                    updated(json!({ "metadata": "changed" }));
                }
                if let Some(owner) = &patch.owner {
                    let old = std::mem::replace(&mut rec.owner, owner.clone());
                    updated(json!({ "owner_from": old, "owner_to": owner }));
                }
                if let Some(scopes) = &patch.scopes {
                    rec.policy.scopes.clone_from(scopes);
                    updated(json!({ "scopes": scopes }));
                }
                if let Some(limits) = &patch.limits {
                    rec.policy.limits.clone_from(limits);
                    updated(json!({ "limits": limits }));
                }
                if let (Some(quota), Some(rule)) = (patch.quota, quota_rule) {
                    rec.policy.quota = rule;
                    updated(json!({ "quota": quota }));
                }
                if let Some(enabled) = patch.whitelist_enabled {
                    rec.whitelist.enabled = enabled;
                    told.push((EventKind::WhitelistUpdated, json!({ "enabled": enabled })));
                }
                Ok(told)
            },
            |old, new, batch| {
                // A limit removed takes its shared budget with it; a new
                // quota setting is what every process now draws on.
                if let Some(limits) = &patch.limits {
                    for l in &old.policy.limits {
                        if !limits.iter().any(|n| n.name == l.name) {
                            batch.delete(Table::Budgets, meter::limit_row_key(&old.id, &l.name));
                        }
                    }
                }
                if let Some(quota) = patch.quota {
                    super::budgets::quota_row(
                        batch,
                        new,
                        quota.map(|q| q.remaining),
                        self.now_ms(),
                    );
                }
            },
        )?;
        if patch.limits.is_some() && self.budgets_shared() || patch.quota.is_some() {
            // The first lease now, so the key's next use need not wait for one.
            let _ = self.fetch_leases(id);
        }
        if let Some(rule) = quota_rule {
            self.fill_quota(&mut info, rule);
        }
        Ok(info)
    }
}
