//! The lookups of keys imported from another system: how verification
//! finds such a key from the string presented, which is not in this
//! store's format — by a keyed hash of it (imported as plaintext), its
//! SHA-256 (imported as such), or its first characters (imported as a
//! bcrypt or argon2 hash with the prefix kept beside it). Never a scan: a
//! string that matches no lookup is refused without any password hash.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::record::{KeyRecord, Lookup};
use crate::key::KeyId;
use crate::locks::{read, write};
use crate::verifier::{TagKey, sha256};

/// Every imported key's lookups, in memory beside the verify index.
#[derive(Default)]
pub(crate) struct Imports {
    /// Whether there are any: a store without imports pays one load.
    any: AtomicBool,
    map: RwLock<ImportMap>,
}

/// Tables keyed by a digest hash it by its first bytes: a digest is
/// already uniform, and nobody but the operator adds to these tables, so
/// crafted lookups cannot crowd them.
#[derive(Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

type ByDigest = HashMap<[u8; 32], KeyId, std::hash::BuildHasherDefault<DigestHasher>>;

#[derive(Default)]
pub(crate) struct ImportMap {
    keyed: ByDigest,
    sha256: ByDigest,
    prefix: HashMap<Box<[u8]>, KeyId>,
    /// How many prefixes have each length.
    prefix_lens: BTreeMap<usize, usize>,
    by_id: HashMap<KeyId, Vec<Lookup>>,
}

impl ImportMap {
    /// Sets the lookups of key `id` (none: it has none, or is gone).
    pub(crate) fn set(&mut self, id: KeyId, lookups: Vec<Lookup>) {
        if let Some(old) = self.by_id.remove(&id) {
            for l in old {
                self.unlink(&id, &l);
            }
        }
        if lookups.is_empty() {
            return;
        }
        for l in &lookups {
            match l {
                Lookup::Keyed(d) => {
                    self.keyed.insert(*d, id);
                }
                Lookup::Sha256(d) => {
                    self.sha256.insert(*d, id);
                }
                Lookup::Prefix(p) => {
                    if self.prefix.insert(p.as_bytes().into(), id).is_none() {
                        *self.prefix_lens.entry(p.len()).or_default() += 1;
                    }
                }
            }
        }
        self.by_id.insert(id, lookups);
    }

    fn unlink(&mut self, id: &KeyId, l: &Lookup) {
        match l {
            Lookup::Keyed(d) => {
                if self.keyed.get(d) == Some(id) {
                    self.keyed.remove(d);
                }
            }
            Lookup::Sha256(d) => {
                if self.sha256.get(d) == Some(id) {
                    self.sha256.remove(d);
                }
            }
            Lookup::Prefix(p) => {
                if self.prefix.get(p.as_bytes()) == Some(id) {
                    self.prefix.remove(p.as_bytes());
                    if let Some(n) = self.prefix_lens.get_mut(&p.len()) {
                        *n -= 1;
                        if *n == 0 {
                            self.prefix_lens.remove(&p.len());
                        }
                    }
                }
            }
        }
    }

    /// The keys whose prefix `key` starts with, the longest prefix first.
    fn prefixed<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = KeyId> + 'a {
        self.prefix_lens
            .keys()
            .rev()
            .filter_map(|&len| key.get(..len).and_then(|p| self.prefix.get(p)).copied())
    }

    fn holder(&self, l: &Lookup) -> Option<KeyId> {
        match l {
            Lookup::Keyed(d) => self.keyed.get(d).copied(),
            Lookup::Sha256(d) => self.sha256.get(d).copied(),
            Lookup::Prefix(p) => self.prefix.get(p.as_bytes()).copied(),
        }
    }
}

/// The lookups a record's generations carry.
pub(crate) fn of_record(rec: &KeyRecord) -> Vec<Lookup> {
    rec.generations
        .iter()
        .filter_map(|g| g.lookup.clone())
        .collect()
}

impl Imports {
    /// The imported key `key` names, if any: the key whose whole string
    /// it is (imported as plaintext or as its SHA-256), else the key with
    /// the longest prefix it starts with ([`Imports::prefixed`] has the
    /// others, for when that key's hash does not match).
    pub(crate) fn find(&self, key: &[u8], tag_key: &TagKey) -> Option<KeyId> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let map = read(&self.map);
        if !map.keyed.is_empty()
            && let Some(id) = map.keyed.get(&tag_key.import_lookup(key))
        {
            return Some(*id);
        }
        if !map.sha256.is_empty()
            && let Some(id) = map.sha256.get(&sha256(key))
        {
            return Some(*id);
        }
        map.prefixed(key).next()
    }

    /// Every key whose prefix `key` starts with, the longest prefix first.
    pub(crate) fn prefixed(&self, key: &[u8]) -> Vec<KeyId> {
        read(&self.map).prefixed(key).collect()
    }

    /// The key that already has lookup `l`, if any.
    pub(crate) fn holder(&self, l: &Lookup) -> Option<KeyId> {
        read(&self.map).holder(l)
    }

    /// Sets the lookups of one key (see [`ImportMap::set`]).
    pub(crate) fn set(&self, id: KeyId, lookups: Vec<Lookup>) {
        let mut map = write(&self.map);
        map.set(id, lookups);
        self.any.store(!map.by_id.is_empty(), Ordering::Release);
    }

    /// Replaces every lookup (a full load).
    pub(crate) fn replace(&self, fresh: ImportMap) {
        let mut map = write(&self.map);
        *map = fresh;
        self.any.store(!map.by_id.is_empty(), Ordering::Release);
    }

    /// Memory held, counted from the tables.
    pub(crate) fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let map = read(&self.map);
        map.keyed.capacity() * (size_of::<([u8; 32], KeyId)>() + 1)
            + map.sha256.capacity() * (size_of::<([u8; 32], KeyId)>() + 1)
            + map.prefix.capacity() * (size_of::<(Box<[u8]>, KeyId)>() + 1)
            + map.prefix.keys().map(|p| p.len()).sum::<usize>()
            + map.by_id.capacity() * (size_of::<(KeyId, Vec<Lookup>)>() + 1)
            + map
                .by_id
                .values()
                .map(|v| v.len() * size_of::<Lookup>())
                .sum::<usize>()
    }
}
