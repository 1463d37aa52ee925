//! Keys imported from another system: the key strings its customers
//! already hold keep working, under a keyward id, with every check native
//! keys have. See [`ImportedSecret`].

use std::fmt;

use serde_json::json;
use zeroize::Zeroizing;

use super::engine::Engine;
use super::record::{GenRecord, KeyInfo, Lookup};
use super::settings::CreateOptions;
use super::verify::MAX_IMPORTED_KEY_LEN;
use super::write::MAX_CREATE_MANY;
use super::write::NewKeys;
use crate::backend::Table;
use crate::error::KeyError;
use crate::key::{self, KeyId};
use crate::locks::lock;
use crate::verifier::{self, SHA256_PHC, SecretHash, hex32};

/// The shortest and longest prefix of a key imported with its hash.
pub const IMPORT_PREFIX_LEN: std::ops::RangeInclusive<usize> = 4..=64;

/// What the other system kept of a key: the key itself, its SHA-256, or
/// a bcrypt, argon2 or Django (`pbkdf2_sha256$…`, djangorestframework-api-key's
/// `sha512$$…`) hash of it together with the key's first characters
/// (which systems that store such hashes keep beside them to find the
/// row, as djangorestframework-api-key does). `Debug` shows the kind only.
pub enum ImportedSecret {
    /// The key as issued; hashed with argon2id on import, never kept.
    Plaintext(Zeroizing<String>),
    /// The SHA-256 of the key, as 64 hexadecimal digits.
    Sha256(String),
    /// A bcrypt (`$2b$…`), argon2 (`$argon2id$…`), Django PBKDF2
    /// (`pbkdf2_sha256$…`) or djangorestframework-api-key SHA-512
    /// (`sha512$$…`) hash of the key, and the key's first characters (4
    /// to 64).
    Phc {
        /// The hash.
        hash: String,
        /// The key's first characters.
        prefix: String,
    },
}

impl ImportedSecret {
    /// From a kind's name (`plaintext`, `sha256`, `phc`), the material,
    /// and the prefix (with `phc` only), as a file or a JSON object gives
    /// them.
    ///
    /// # Errors
    /// A message that names what is wrong, never the material.
    pub fn new(
        kind: &str,
        secret: Zeroizing<String>,
        prefix: Option<String>,
    ) -> Result<Self, String> {
        match (kind, prefix) {
            ("plaintext", None) => Ok(ImportedSecret::Plaintext(secret)),
            ("sha256", None) => Ok(ImportedSecret::Sha256(secret.to_string())),
            ("phc", Some(prefix)) => Ok(ImportedSecret::Phc {
                hash: secret.to_string(),
                prefix,
            }),
            ("phc", None) => Err("kind phc needs a prefix".into()),
            ("plaintext" | "sha256", Some(_)) => Err("a prefix goes with kind phc only".into()),
            _ => Err("kind is plaintext, sha256 or phc".into()),
        }
    }

    /// `plaintext`, `sha256` or `phc`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            ImportedSecret::Plaintext(_) => "plaintext",
            ImportedSecret::Sha256(_) => "sha256",
            ImportedSecret::Phc { .. } => "phc",
        }
    }
}

impl fmt::Debug for ImportedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImportedSecret::{}(…)", self.kind())
    }
}

/// What an imported key's generation is stored as.
struct Material {
    phc: String,
    tag: u32,
    last4: String,
    lookup: Lookup,
}

impl Engine {
    /// Checks one imported secret and turns it into what is stored.
    fn material(&self, secret: &ImportedSecret) -> Result<Material, KeyError> {
        let bad = |m: &str| KeyError::InvalidInput(m.to_string());
        Ok(match secret {
            ImportedSecret::Plaintext(k) => {
                let bytes = k.as_bytes();
                if bytes.is_empty() || bytes.len() > MAX_IMPORTED_KEY_LEN {
                    return Err(bad("an imported key is 1 to 512 bytes"));
                }
                if key::parse(bytes, &self.prefix).is_ok() {
                    return Err(bad("this is already a key of this store"));
                }
                let last4: String = k
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Material {
                    phc: verifier::hash_secret(&self.hasher, bytes).map_err(KeyError::Internal)?,
                    tag: self.tag_key.tag(bytes),
                    last4,
                    lookup: Lookup::Keyed(self.tag_key.import_lookup(bytes)),
                }
            }
            ImportedSecret::Sha256(hex) => {
                let digest = hex32(&hex.to_ascii_lowercase())
                    .ok_or_else(|| bad("a SHA-256 is 64 hexadecimal digits"))?;
                Material {
                    phc: format!("{SHA256_PHC}{}", hex.to_ascii_lowercase()),
                    tag: 0,
                    last4: String::new(),
                    lookup: Lookup::Sha256(digest),
                }
            }
            ImportedSecret::Phc { hash, prefix } => {
                if matches!(SecretHash::from_phc(hash), SecretHash::Sha256(_)) {
                    return Err(bad(verifier::NOT_A_KNOWN_HASH));
                }
                verifier::check_imported_hash(hash).map_err(KeyError::InvalidInput)?;
                if !IMPORT_PREFIX_LEN.contains(&prefix.len())
                    || !prefix.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(bad("a key prefix is 4 to 64 printable ASCII characters"));
                }
                Material {
                    phc: hash.clone(),
                    tag: 0,
                    last4: String::new(),
                    lookup: Lookup::Prefix(prefix.clone()),
                }
            }
        })
    }

    /// Imports keys from another system, all or none, in one durable
    /// write: each keeps working as the string its holder has.
    pub(crate) fn import_many(
        &self,
        keys: Vec<(String, ImportedSecret, CreateOptions)>,
    ) -> Result<Vec<KeyInfo>, KeyError> {
        if keys.len() > MAX_CREATE_MANY {
            return Err(KeyError::InvalidInput(format!(
                "at most {MAX_CREATE_MANY} keys at once (got {})",
                keys.len()
            )));
        }
        let now = self.now_ms();
        let mut prepared = Vec::with_capacity(keys.len());
        for (name, secret, options) in keys {
            let (options, wl) = options.checked(&name, now)?;
            prepared.push((name, secret.kind(), self.material(&secret)?, options, wl));
        }
        let mut new = NewKeys::default();
        let mut made = Vec::with_capacity(prepared.len());
        let _w = lock(&self.write_lock);
        let mut seen = std::collections::HashSet::new();
        for (name, kind, m, options, wl) in prepared {
            if self.index.imports.holder(&m.lookup).is_some() || !seen.insert(m.lookup.clone()) {
                return Err(KeyError::InvalidInput(format!(
                    "key {name:?}: this key (or a key with this prefix) was imported already"
                )));
            }
            let id = KeyId::random();
            let data = json!({
                "imported": kind,
                "expires_at": options.expires_at,
                "whitelist_enabled": wl.enabled,
            });
            let first = GenRecord {
                n: 1,
                created_at: now,
                retired_at: None,
                grace_until: None,
                phc: m.phc,
                tag: m.tag,
                store_tag: true,
                last4: m.last4,
                lookup: Some(m.lookup),
            };
            let remaining = options.quota.map(|q| q.remaining);
            let rec = options.into_record(id, name, wl, now, first);
            // One key per lookup, whichever process imports it.
            let row = rec.generations[0].lookup.as_ref().expect("imported").row();
            new.checks.expect(Table::Imports, row.clone(), None);
            new.records.put(Table::Imports, row, id.as_bytes().to_vec());
            new.add(self, &rec, remaining, now, data);
            made.push(rec);
        }
        // A lookup taken meanwhile (by another process), or an id
        // collision (astronomically unlikely).
        self.commit_new(new, made.iter(), || {
            KeyError::InvalidInput(
                "a key was imported already (by another process); nothing was imported".into(),
            )
        })?;
        Ok(made
            .iter()
            .map(|rec| self.info_of(rec, None, now))
            .collect())
    }
}
