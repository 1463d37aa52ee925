//! Finding leaked keys: strings in this store's key format in any text,
//! and what each is to the store, decided as verification would, without
//! an address, usage or events.

use serde_json::Value;

use super::Store;
use super::index::LeakState;
use crate::error::KeyError;
use crate::events::EventKind;
use crate::key::{self, KeyId};
use crate::store::KeyInfo;

impl Store {
    /// The length of this store's keys, in bytes.
    #[must_use]
    pub fn key_len(&self) -> usize {
        self.engine.prefix.len() + 2 + key::ID_LEN + key::SECRET_LEN + key::CHECK_LEN
    }

    /// The byte ranges of `text` holding a key in this store's format (its
    /// prefix, an id, a secret) whose checksum is right; text around a key
    /// must not continue it (a letter, digit or `_` on either side).
    #[must_use]
    pub fn find_keys(&self, text: &[u8]) -> Vec<std::ops::Range<usize>> {
        let prefix = self.engine.prefix.as_bytes();
        let len = self.key_len();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut found = Vec::new();
        let mut at = 0;
        while at + len <= text.len() {
            // Every start from which a whole key still fits.
            let Some(i) = text[at..text.len() - len + prefix.len()]
                .windows(prefix.len())
                .position(|w| w == prefix)
            else {
                break;
            };
            let start = at + i;
            let end = start + len;
            let bounded =
                (start == 0 || !word(text[start - 1])) && text.get(end).is_none_or(|&b| !word(b));
            if bounded && key::parse(&text[start..end], &self.engine.prefix).is_ok() {
                found.push(start..end);
                at = end;
            } else {
                at = start + 1;
            }
        }
        found
    }

    /// What `key`, found outside the store, is to it: `None` when it is not
    /// a key of this store's format; else its id and [`LeakState`].
    /// Decided as verification decides it, and at no greater cost: a
    /// secret not known warm is hashed only when it passes the key's
    /// pre-check tag, and then through the key's share of the hash gate
    /// and the gate (waiting its turn, where verification would answer
    /// `Busy`); so a text full of forged keys with real ids costs no
    /// argon2. Nothing is recorded, and a secret found good warms the
    /// cache as a verification would.
    #[must_use]
    pub fn inspect_found(&self, key: &[u8]) -> Option<(KeyId, LeakState)> {
        let parsed = key::parse(key, &self.engine.prefix).ok()?;
        let id = parsed.id;
        let engine = &self.engine;
        let Some(live) = engine.index.get(&id) else {
            return Some((id, LeakState::UnknownKey));
        };
        let digest = engine.warm_key.digest(parsed.secret);
        let matched = match live.warm_match(&digest) {
            Some(i) => Some(i),
            None => match engine.candidates(&live, &digest, parsed.secret, false) {
                Err(i) => Some(i),
                Ok(c) if c.is_empty() => None,
                Ok(candidates) => loop {
                    match engine.cold_match(id, &live, &candidates, &digest, parsed.secret) {
                        Ok(n) => {
                            let i = n.and_then(|n| live.gens.iter().position(|g| g.n == n));
                            if let Some(i) = i {
                                let _ = live.gens[i].warm.set(digest);
                            }
                            break i;
                        }
                        // The gate is full: a scan waits its turn.
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                    }
                },
            },
        };
        Some((id, live.leak_state(matched, engine.now_ms())))
    }

    /// Records that key `id` was found leaked: a `key.leaked` event for
    /// plugins, with `details` (where it was found, what was done).
    ///
    /// # Errors
    /// [`KeyError::NotFound`] or storage.
    pub fn report_leak(&self, id: &KeyId, details: &Value) -> Result<KeyInfo, KeyError> {
        self.engine
            .update(id, EventKind::KeyLeaked, |_, _| Ok(details.clone()))
    }
}
