//! The in-memory index `verify` reads: per key, what admission needs
//! (status, whitelist rules, each generation's pre-check tag, argon2 hash
//! and, once a secret has verified, its warm digest). Built from the key
//! records and replaced record by record after each committed change.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use subtle::ConstantTimeEq;

use super::codec::{self, Stored, View};
use super::imports::{self, ImportMap, Imports};
use super::meter::{Meter, prefetch};
use super::record::{KeyRecord, Policy};
use crate::backend::StorageError;
use crate::key::{IdMap, KeyId};
use crate::locks::{lock, read, write};
use crate::policy::Scopes;
use crate::time::Timestamp;
use crate::usage::Freshness;
use crate::verdict::{Decision, Denial, Grant};
use crate::verifier::SecretHash;
use crate::whitelist::Rules;

const INDEX_SHARDS: usize = 64;

/// What `verify` needs of one key, built from its record.
pub(crate) struct Live {
    disabled: bool,
    /// When it stops working (ms); `i64::MAX`: never.
    expires_at: i64,
    /// The key's account, shared with every grant (no allocation per verify).
    pub(crate) owner: Option<Arc<str>>,
    /// What few keys have (a whitelist, scopes, limits, a quota): boxed, so
    /// that a million plain keys do not each carry room for them.
    extras: Option<Box<Extras>>,
    /// Newest first; the newest inside the entry (most keys have one).
    pub gens: SmallVec<[LiveGen; 1]>,
}

/// A key's whitelist, scopes and meter, when it has any.
struct Extras {
    /// `Some` when the whitelist restriction is on.
    rules: Option<Rules>,
    /// The key's scopes, sorted (shared with every grant).
    scopes: Scopes,
    /// Its rate limits and quota in this process, kept across rebuilds of
    /// the entry while they stay the same.
    meter: Option<Arc<Meter>>,
}

/// The scopes of a key that has none.
static NO_SCOPES: Scopes = Scopes::NONE;

/// What a key found outside the store (in a file, a paste, a log) is to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakState {
    /// The current secret, or an older one still in its grace period, of
    /// an enabled, unexpired key: it works now.
    Live,
    /// A secret the key had before a regeneration, past its grace.
    Rotated,
    /// The key exists but never had this secret.
    WrongSecret,
    /// No key has this id.
    UnknownKey,
    /// The key's own secret, but the key is disabled or expired.
    Inactive,
}

impl LeakState {
    /// `live`, `rotated`, `wrong_secret`, `unknown_key`, `inactive`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LeakState::Live => "live",
            LeakState::Rotated => "rotated",
            LeakState::WrongSecret => "wrong_secret",
            LeakState::UnknownKey => "unknown_key",
            LeakState::Inactive => "inactive",
        }
    }
}

pub(crate) struct LiveGen {
    pub n: u32,
    tag: u32,
    /// `tag` is keyed with the store's tag key, not the legacy constant.
    store_tag: bool,
    retired_at: i64,
    /// Until when an old generation still admits (ms); `i64::MIN`: it
    /// does not (a current one, or one retired without a grace period).
    grace: i64,
    pub hash: SecretHash,
    /// A key imported from another system: its secret is the whole key as
    /// that system issued it, found through [`Imports`], without a tag.
    imported: bool,
    /// Keyed digest of this generation's secret, once one verification of it
    /// has succeeded. A generation's secret never changes, so set once.
    pub warm: OnceLock<crate::verifier::WarmDigest>,
}

impl LiveGen {
    fn grace_until(&self) -> Option<i64> {
        (self.grace != i64::MIN).then_some(self.grace)
    }
}

/// A generation as a source gives it to the index.
struct GenParts {
    n: u32,
    tag: u32,
    store_tag: bool,
    retired_at: Option<i64>,
    grace_until: Option<i64>,
    hash: SecretHash,
    imported: bool,
}

/// The accounts of a full load, one shared string each.
#[derive(Default)]
pub(crate) struct Owners(HashSet<Arc<str>>);

impl Owners {
    fn get(&mut self, owner: &str) -> Arc<str> {
        if let Some(o) = self.0.get(owner) {
            return Arc::clone(o);
        }
        let o: Arc<str> = Arc::from(owner);
        self.0.insert(Arc::clone(&o));
        o
    }
}

impl Live {
    /// Builds the entry for `rec`, keeping the warm digests of generations
    /// that `previous` (the entry it replaces) had already verified.
    pub(crate) fn from_record(rec: &KeyRecord, previous: Option<&Live>) -> Self {
        let owner = match (
            previous.and_then(|p| p.owner.as_ref()),
            rec.owner.as_deref(),
        ) {
            // The same account: the same shared string.
            (Some(was), Some(is)) if **was == *is => Some(Arc::clone(was)),
            (_, is) => is.map(Arc::from),
        };
        Self::build(
            rec.disabled,
            rec.expires_at,
            rec.whitelist
                .enabled
                .then(|| Rules::from_entries(&rec.whitelist.entries)),
            owner,
            rec.generations.iter().map(|g| GenParts {
                n: g.n,
                tag: g.tag,
                store_tag: g.store_tag,
                retired_at: g.retired_at,
                grace_until: g.grace_until,
                hash: SecretHash::from_phc(&g.phc),
                imported: g.lookup.is_some(),
            }),
            &rec.policy,
            previous,
        )
    }

    /// Builds the entry of a record read in place from storage.
    fn from_view(
        view: &View<'_>,
        sections: &codec::Sections,
        previous: Option<&Live>,
        owners: &mut Owners,
    ) -> Result<Self, StorageError> {
        let imported = &sections.lookups;
        let mut gens = Vec::with_capacity(view.generations.len());
        for g in &view.generations {
            gens.push(GenParts {
                n: g.n,
                tag: g.tag,
                store_tag: g.store_tag,
                retired_at: g.retired_at,
                grace_until: g.grace_until,
                hash: g.secret_hash().ok_or_else(|| {
                    StorageError::new(format!("key record {}: a bad hash", view.id))
                })?,
                imported: imported.iter().any(|(n, _)| *n == g.n),
            });
        }
        Ok(Self::build(
            view.disabled,
            view.expires_at,
            view.whitelist_enabled
                .then(|| Rules::from_networks(view.entries.iter().map(|e| e.network))),
            view.owner.map(|o| owners.get(o)),
            gens.into_iter(),
            &sections.policy,
            previous,
        ))
    }

    fn build(
        disabled: bool,
        expires_at: Option<i64>,
        rules: Option<Rules>,
        owner: Option<Arc<str>>,
        gens: impl Iterator<Item = GenParts>,
        policy: &Policy,
        previous: Option<&Live>,
    ) -> Self {
        let gens = gens
            .map(|g| {
                let warm = OnceLock::new();
                if let Some(d) = previous
                    .and_then(|p| p.gens.iter().find(|pg| pg.n == g.n))
                    .and_then(|pg| pg.warm.get())
                {
                    let _ = warm.set(*d);
                }
                LiveGen {
                    n: g.n,
                    tag: g.tag,
                    store_tag: g.store_tag,
                    retired_at: g.retired_at.unwrap_or(i64::MAX),
                    grace: g.grace_until.unwrap_or(i64::MIN),
                    hash: g.hash,
                    imported: g.imported,
                    warm,
                }
            })
            .collect();
        let scopes = match previous.map(Live::scopes) {
            Some(was) if was.are(&policy.scopes) => was.clone(),
            _ => Scopes::new(&policy.scopes),
        };
        let meter = match previous.and_then(Live::meter) {
            Some(m) if m.same(&policy.limits, policy.quota) => Some(Arc::clone(m)),
            _ => Meter::new(&policy.limits, policy.quota).map(Arc::new),
        };
        let extras = (rules.is_some() || !scopes.is_empty() || meter.is_some()).then(|| {
            Box::new(Extras {
                rules,
                scopes,
                meter,
            })
        });
        Live {
            disabled,
            expires_at: expires_at.unwrap_or(i64::MAX),
            owner,
            extras,
            gens,
        }
    }

    /// The key's scopes (none, mostly).
    pub(crate) fn scopes(&self) -> &Scopes {
        self.extras.as_ref().map_or(&NO_SCOPES, |e| &e.scopes)
    }

    /// Its rate limits and quota in this process, if it has any.
    pub(crate) fn meter(&self) -> Option<&Arc<Meter>> {
        self.extras.as_ref().and_then(|e| e.meter.as_ref())
    }

    fn rules(&self) -> Option<&Rules> {
        self.extras.as_ref().and_then(|e| e.rules.as_ref())
    }

    /// Asks the processor for what a verification of this key reads next
    /// and is kept apart from the entry — the newest generation's digest,
    /// the scopes, the meter — so those loads overlap each other and the
    /// digest of the secret instead of following one another.
    pub(crate) fn prefetch(&self) {
        if let Some(g) = self.gens.first() {
            prefetch(&raw const g.warm);
        }
        if let Some(e) = &self.extras {
            if let Some(p) = e.scopes.as_ptr() {
                prefetch(p);
            }
            if let Some(m) = &e.meter {
                m.prefetch();
            }
        }
    }

    /// Whether the key carries `scope`.
    pub(crate) fn has_scope(&self, scope: &str) -> bool {
        self.scopes().contains(scope)
    }

    /// Heap bytes of this entry (its `Arc` allocation and what it points
    /// to; an account's name shared by several keys is split between them).
    fn heap_bytes(self: &Arc<Self>) -> usize {
        use std::mem::size_of;
        let owner = self.owner.as_ref().map_or(0, |o| {
            (o.len() + 2 * size_of::<usize>()) / Arc::strong_count(o).max(1)
        });
        2 * size_of::<usize>()
            + size_of::<Live>()
            + if self.gens.spilled() {
                self.gens.capacity() * size_of::<LiveGen>()
            } else {
                0
            }
            + self.gens.iter().map(|g| g.hash.heap_bytes()).sum::<usize>()
            + self.extras.as_ref().map_or(0, |e| {
                size_of::<Extras>()
                    + e.rules.as_ref().map_or(0, Rules::heap_bytes)
                    + e.scopes.heap_bytes()
                    + e.meter.as_ref().map_or(0, |m| m.heap_bytes())
            })
            + owner
    }

    /// Status, then whitelist. A refused IP never costs a hash.
    pub(crate) fn gatekeep(&self, now: i64, ip: IpAddr) -> Option<Denial> {
        if self.disabled {
            return Some(Denial::Disabled);
        }
        if self.expires_at <= now {
            return Some(Denial::Expired);
        }
        if self.rules().is_some_and(|r| !r.admits(ip)) {
            return Some(Denial::IpNotAllowed);
        }
        None
    }

    /// What a secret found outside is, given the generation it matched
    /// (`None`: none): the verdict's rules without an address or usage.
    pub(crate) fn leak_state(&self, matched: Option<usize>, now: i64) -> LeakState {
        let Some(i) = matched else {
            return LeakState::WrongSecret;
        };
        let g = &self.gens[i];
        if i != 0 && g.grace_until().is_none_or(|until| until <= now) {
            return LeakState::Rotated;
        }
        if self.disabled || self.expires_at <= now {
            return LeakState::Inactive;
        }
        LeakState::Live
    }

    pub(crate) fn warm_match(&self, digest: &crate::verifier::WarmDigest) -> Option<usize> {
        self.gens
            .iter()
            .position(|g| g.warm.get().is_some_and(|w| bool::from(w.ct_eq(digest))))
    }

    /// Generations the secret may belong to and needs argon2 for: cold ones
    /// whose pre-check tag matches. A warm generation cannot be one (its
    /// digest is compared instead); one that another thread warmed since
    /// [`Live::warm_match`] looked is compared here, and a match is `Err(i)`.
    /// `tag` is the secret's tag under the store's key; `legacy` its tag
    /// under the legacy constant, given when [`Live::has_legacy_tags`].
    pub(crate) fn cold_candidates(
        &self,
        digest: &crate::verifier::WarmDigest,
        tag: u32,
        legacy: Option<u32>,
    ) -> Result<Vec<usize>, usize> {
        let mut candidates = Vec::new();
        for (i, g) in self.gens.iter().enumerate() {
            if let Some(w) = g.warm.get() {
                if bool::from(w.ct_eq(digest)) {
                    return Err(i);
                }
            } else {
                let wanted = if g.store_tag { Some(tag) } else { legacy };
                if wanted == Some(g.tag) {
                    candidates.push(i);
                }
            }
        }
        Ok(candidates)
    }

    /// For a key found through its import lookup: the generations to
    /// verify the whole key against (imported ones not yet warm), or
    /// `Err(i)` when generation `i` is warm with it.
    pub(crate) fn imported_candidates(
        &self,
        digest: &crate::verifier::WarmDigest,
    ) -> Result<Vec<usize>, usize> {
        let mut candidates = Vec::new();
        for (i, g) in self.gens.iter().enumerate() {
            match g.warm.get() {
                Some(w) if bool::from(w.ct_eq(digest)) => return Err(i),
                None if g.imported => candidates.push(i),
                _ => {}
            }
        }
        Ok(candidates)
    }

    /// Whether a generation still has a tag keyed with the legacy constant.
    pub(crate) fn has_legacy_tags(&self) -> bool {
        self.gens.iter().any(|g| !g.store_tag)
    }

    /// The verdict for a secret that matched generation `gens[i]`.
    pub(crate) fn decide(&self, id: KeyId, i: usize, now: i64) -> (Decision, Freshness) {
        let g = &self.gens[i];
        if i == 0 {
            let grant = Grant {
                key_id: id,
                generation: g.n,
                in_grace: false,
                owner: self.owner.clone(),
                scopes: self.scopes().clone(),
            };
            return (Decision::Valid(grant), Freshness::Current);
        }
        if g.grace_until().is_some_and(|until| until > now) {
            let grant = Grant {
                key_id: id,
                generation: g.n,
                in_grace: true,
                owner: self.owner.clone(),
                scopes: self.scopes().clone(),
            };
            return (Decision::Valid(grant), Freshness::Stale);
        }
        // It stopped working at the end of its grace, or when it was retired.
        let at = g.grace_until().unwrap_or(g.retired_at);
        (
            Decision::Denied(Denial::Rotated {
                at: Timestamp::from_unix_millis(at),
            }),
            Freshness::Stale,
        )
    }
}

pub(crate) type Shard = RwLock<IdMap<Arc<Live>>>;

/// Every key's [`Live`] entry, sharded so that writers lock out few readers.
pub(crate) struct Index {
    shards: Box<[Shard]>,
    /// The argon2 verifications running per key.
    pub cold: ColdKeys,
    /// How keys imported from other systems are found.
    pub imports: Imports,
}

impl Index {
    pub(crate) fn new() -> Self {
        Index {
            shards: (0..INDEX_SHARDS)
                .map(|_| RwLock::new(IdMap::default()))
                .collect(),
            cold: ColdKeys::default(),
            imports: Imports::default(),
        }
    }

    fn shard_index(id: &KeyId) -> usize {
        let b = id.as_bytes();
        (usize::from(b[2]) * 61 + usize::from(b[3])) % INDEX_SHARDS
    }

    pub(crate) fn shard(&self, id: &KeyId) -> &Shard {
        &self.shards[Self::shard_index(id)]
    }

    pub(crate) fn get(&self, id: &KeyId) -> Option<Arc<Live>> {
        read(self.shard(id)).get(id).cloned()
    }

    pub(crate) fn contains(&self, id: &KeyId) -> bool {
        read(self.shard(id)).contains_key(id)
    }

    /// The account of key `id`, when the index has the key and it has one.
    pub(crate) fn owner(&self, id: &KeyId) -> Option<Arc<str>> {
        read(self.shard(id)).get(id)?.owner.clone()
    }

    pub(crate) fn install(&self, rec: &KeyRecord) {
        let mut shard = write(self.shard(&rec.id));
        let live = Live::from_record(rec, shard.get(&rec.id).map(Arc::as_ref));
        shard.insert(rec.id, Arc::new(live));
        self.imports.set(rec.id, imports::of_record(rec));
    }

    pub(crate) fn remove(&self, id: &KeyId) {
        write(self.shard(id)).remove(id);
        self.imports.set(*id, Vec::new());
    }

    /// The entries with a meter (rate limits or a quota).
    pub(crate) fn metered(&self) -> Vec<(KeyId, Arc<Live>)> {
        self.shards
            .iter()
            .flat_map(|s| {
                read(s)
                    .iter()
                    .filter(|(_, l)| l.meter().is_some())
                    .map(|(id, l)| (*id, Arc::clone(l)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// Memory the index holds, counted from its structures: each shard's
    /// table (slots and control bytes, by capacity) and each entry's heap.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let map = read(s);
                map.capacity() * (std::mem::size_of::<(KeyId, Arc<Live>)>() + 1)
                    + map.values().map(Live::heap_bytes).sum::<usize>()
            })
            .sum::<usize>()
            + self.imports.approx_bytes()
    }

    /// Replaces every entry with one built from `pages` of stored key
    /// records (in either format; warm digests of unchanged generations
    /// are kept), handing each page to `done` once read; on the first
    /// error nothing changes.
    pub(crate) fn replace_all(
        &self,
        pages: impl Iterator<Item = Result<Page, StorageError>>,
        mut done: impl FnMut(Page),
    ) -> Result<(), StorageError> {
        let mut fresh: Vec<IdMap<Arc<Live>>> =
            (0..INDEX_SHARDS).map(|_| IdMap::default()).collect();
        let mut owners = Owners::default();
        let mut imports = ImportMap::default();
        for page in pages {
            let page = page?;
            for bytes in page.records() {
                let (id, live, lookups) = Self::entry(bytes, self, &mut owners)?;
                fresh[Self::shard_index(&id)].insert(id, Arc::new(live));
                if !lookups.is_empty() {
                    imports.set(id, lookups);
                }
            }
            done(page);
        }
        for (shard, map) in self.shards.iter().zip(fresh) {
            *write(shard) = map;
        }
        self.imports.replace(imports);
        Ok(())
    }

    /// The entry of one stored record (keeping what `current` has warm).
    fn entry(
        bytes: &[u8],
        current: &Index,
        owners: &mut Owners,
    ) -> Result<(KeyId, Live, Vec<super::record::Lookup>), StorageError> {
        Ok(match codec::stored(bytes)? {
            Stored::View(view, sections) => {
                let id: KeyId = view.id.parse().map_err(|_| {
                    StorageError::new(format!("a key record with a bad id {:?}", view.id))
                })?;
                let previous = current.get(&id);
                let live = Live::from_view(&view, &sections, previous.as_deref(), owners)?;
                (
                    id,
                    live,
                    sections.lookups.into_iter().map(|(_, l)| l).collect(),
                )
            }
            Stored::Record(rec) => {
                let previous = current.get(&rec.id);
                let mut live = Live::from_record(&rec, previous.as_deref());
                live.owner = rec.owner.as_deref().map(|o| owners.get(o));
                (rec.id, live, imports::of_record(&rec))
            }
        })
    }
}

/// The argon2 verifications running now, per key (only keys with one
/// running are listed: a key costs nothing here until its secret is
/// hashed, and cold verifications are rare and slow beside this lock).
#[derive(Default)]
pub(crate) struct ColdKeys {
    running: Mutex<HashMap<KeyId, usize>>,
    done: Condvar,
    /// Keys whose last argon2 verification found no generation, and until
    /// when (store clock, ms) they rest: see [`ColdKeys::missed`].
    resting: Mutex<HashMap<KeyId, i64>>,
}

/// A key's wrong guesses take at most one part in this of one slot of the
/// argon2 gate's time.
const MISS_SHARE: u32 = 8;

/// Keys resting at once before the ones done resting are let go.
const RESTING_KEPT: usize = 1024;

impl ColdKeys {
    /// Whether key `id` rests at `now`: its cold verifications are refused
    /// (`Busy`) without hashing.
    pub(crate) fn resting(&self, id: &KeyId, now: i64) -> bool {
        lock(&self.resting)
            .get(id)
            .is_some_and(|&until| now < until)
    }

    /// Key `id` rests no more: its miss was not a guess at it (the string
    /// was another key's, found by a shorter prefix).
    pub(crate) fn forgive(&self, id: &KeyId) {
        lock(&self.resting).remove(id);
    }

    /// Key `id`'s argon2 verification, which took `took`, matched no
    /// generation (a guess, mostly: a key imported with its hash has no
    /// pre-check tag, and its prefix is public). It rests long enough that
    /// its misses take at most 1/[`MISS_SHARE`] of a slot of the gate,
    /// whatever the number of guessers.
    pub(crate) fn missed(&self, id: KeyId, took: Duration, now: i64) {
        let rest = took.saturating_mul(MISS_SHARE - 1).as_millis();
        let until = now.saturating_add(i64::try_from(rest).unwrap_or(i64::MAX).max(1));
        let mut resting = lock(&self.resting);
        if resting.len() >= RESTING_KEPT {
            resting.retain(|_, &mut u| u > now);
        }
        resting.insert(id, until);
    }

    /// A share of the argon2 gate for key `id`, waiting up to `wait` while
    /// it has `limit` verifications running; `None` after that. A flood
    /// against one key waits on itself, not on every other key.
    pub(crate) fn share(&self, id: KeyId, limit: usize, wait: Duration) -> Option<ColdShare<'_>> {
        let deadline = Instant::now() + wait;
        let mut running = lock(&self.running);
        while running.get(&id).is_some_and(|&n| n >= limit) {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            running = self
                .done
                .wait_timeout(running, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *running.entry(id).or_insert(0) += 1;
        Some(ColdShare { keys: self, id })
    }
}

/// One of a key's argon2 verifications in progress.
pub(crate) struct ColdShare<'a> {
    keys: &'a ColdKeys,
    id: KeyId,
}

impl Drop for ColdShare<'_> {
    fn drop(&mut self) {
        let mut running = lock(&self.keys.running);
        if let Some(n) = running.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.id);
            }
        }
        drop(running);
        // Waiters of every key share the condition: each checks its own.
        self.keys.done.notify_all();
    }
}

/// Records read from storage in one go, for the index to decode.
#[derive(Default)]
pub(crate) struct Page {
    pub(super) data: Vec<u8>,
    pub(super) ends: Vec<usize>,
    /// The reader that filled it, and gets it back.
    pub(super) reader: usize,
}

impl Page {
    /// Its records, in order.
    pub(crate) fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter()).map(|(a, &b)| &self.data[a..b])
    }
}
