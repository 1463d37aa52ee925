//! The hot path: a presented key against the in-memory index, never
//! touching storage. Steps: parse and checksum, look the id up, status
//! and whitelist, then the secret against the warm digest (argon2 only on
//! a cache miss whose pre-check tag matches), then usage in memory.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::engine::Engine;
use super::index::Live;
use crate::events::EventKind;
use crate::key::{self, KeyId};
use crate::locks::read;
use crate::usage::{Freshness, Occurrence, Outcome};
use crate::verdict::{Decision, Denial, Refusal, Verdict, VerifyRequest};
use crate::verifier;
use crate::whitelist;

/// The longest key imported from another system (longer input is not
/// hashed to look it up).
pub(crate) const MAX_IMPORTED_KEY_LEN: usize = 512;

/// What a key says to a secret: the decision, how fresh the secret is,
/// for a refused address whether the secret is known good, and for a
/// refusal the key's account.
type Decided = (Decision, Freshness, bool, Option<Arc<str>>);

/// What the warm path found: an answer, or the need for argon2.
enum Step {
    Done(Decision, Freshness),
    Cold(Cold),
}

/// A secret to verify with argon2: the key's entry, the candidate
/// generations, the secret's warm digest.
struct Cold {
    live: Arc<Live>,
    candidates: Vec<usize>,
    digest: crate::verifier::WarmDigest,
}

impl Engine {
    pub(crate) fn verify(&self, req: &VerifyRequest<'_>) -> Verdict {
        let VerifyRequest {
            key,
            client_ip,
            integration,
            scope,
            ..
        } = *req;
        let Some((id, secret, imported)) = self.identify(key) else {
            return Verdict::Denied(Refusal::new(Denial::Malformed));
        };
        let ip = whitelist::normalise_ip(client_ip);
        let now = self.now_ms();
        // Fail closed: a shared store that cannot confirm it is current
        // could be missing a revocation.
        if self.shared
            && self.monotonic_ms() - self.synced_at.load(Ordering::Acquire) > self.staleness_ms
            && !self.caught_up_locally()
        {
            // Counted for keys the index knows; an unknown id costs nothing.
            let known = read(self.index.shard(&id))
                .get(&id)
                .map(|l| l.owner.clone());
            if known.is_some() {
                self.usage.record(
                    id,
                    now,
                    ip,
                    integration,
                    Outcome::Denied(Denial::Unavailable),
                    Freshness::Unknown,
                    scope,
                );
            }
            return Verdict::Denied(Refusal {
                denial: Denial::Unavailable,
                key_id: Some(id),
                owner: known.flatten(),
            });
        }
        let Some(mut decided) = self.decide(id, secret, imported, ip, scope, now) else {
            return Verdict::Denied(Refusal {
                denial: Denial::UnknownKey,
                key_id: Some(id),
                owner: None,
            });
        };
        let mut id = id;
        if imported
            && matches!(
                decided.0,
                Decision::Denied(Denial::WrongSecret | Denial::Busy)
            )
        {
            (id, decided) = self.other_imports(key, id, decided, ip, scope, now);
        }
        let (verdict, freshness, confirmed, owner) = decided;
        let outcome = match &verdict {
            Decision::Valid(_) => Outcome::Allowed,
            Decision::Denied(d) => Outcome::Denied(*d),
        };
        // Rare paths only: a refused IP, an old secret.
        let notice_kind = match (&verdict, freshness) {
            (Decision::Denied(Denial::IpNotAllowed), _) => Some(EventKind::KeyDeniedIp),
            (_, Freshness::Stale) => Some(EventKind::KeyStaleSecretUsed),
            _ => None,
        };
        if let Some(kind) = notice_kind {
            self.usage.notice(&Occurrence {
                kind,
                key_id: id,
                ip,
                integration,
                generation: match &verdict {
                    Decision::Valid(g) => Some(g.generation),
                    Decision::Denied(_) => None,
                },
                confirmed: (kind == EventKind::KeyDeniedIp).then_some(confirmed),
                at: now,
            });
        }
        self.usage
            .record(id, now, ip, integration, outcome, freshness, scope);
        match verdict {
            Decision::Valid(g) => Verdict::Valid(g),
            Decision::Denied(denial) => Verdict::Denied(Refusal {
                denial,
                key_id: Some(id),
                owner,
            }),
        }
    }

    /// An imported key's string that key `first` (the longest prefix it
    /// starts with) refused for its secret (or was too busy to check):
    /// the other keys whose prefix it starts with, longest first, until
    /// one has it. Without one, `first`'s refusal stands (`Busy` if any
    /// could not check).
    fn other_imports(
        &self,
        key: &[u8],
        first: KeyId,
        refused: Decided,
        ip: IpAddr,
        scope: Option<&str>,
        now: i64,
    ) -> (KeyId, Decided) {
        let mut busy = refused.0 == Decision::Denied(Denial::Busy);
        let mut missed = if busy { vec![] } else { vec![first] };
        for other in self.index.imports.prefixed(key) {
            if other == first || missed.contains(&other) {
                continue;
            }
            let Some(d) = self.decide(other, key, true, ip, scope, now) else {
                continue;
            };
            match d.0 {
                Decision::Denied(Denial::WrongSecret) => missed.push(other),
                Decision::Denied(Denial::Busy) => busy = true,
                _ => {
                    // Not guesses at the keys tried before: they do not rest.
                    for m in &missed {
                        self.index.cold.forgive(m);
                    }
                    return (other, d);
                }
            }
        }
        let mut refused = refused;
        if busy {
            refused.0 = Decision::Denied(Denial::Busy);
        }
        (first, refused)
    }

    /// What key `id` says to `secret` from `ip`: the verdict, how fresh
    /// the secret is, and for a refused address whether the secret is
    /// known good; `None` when no key has the id. Records nothing.
    #[inline]
    fn decide(
        &self,
        id: KeyId,
        secret: &[u8],
        imported: bool,
        ip: IpAddr,
        scope: Option<&str>,
        now: i64,
    ) -> Option<Decided> {
        // For a refused IP: whether the secret is known good (warm), which
        // the notice tells; no argon2 is run to find out.
        let mut confirmed = false;
        let mut owner = None;
        let step = {
            let shard = read(self.index.shard(&id));
            let live = shard.get(&id)?;
            live.prefetch();
            let step = if let Some(d) = live.gatekeep(now, ip) {
                if d == Denial::IpNotAllowed {
                    confirmed = live.warm_match(&self.warm_key.digest(secret)).is_some();
                }
                Step::Done(Decision::Denied(d), Freshness::Unknown)
            } else {
                let digest = self.warm_key.digest(secret);
                if let Some(i) = live.warm_match(&digest) {
                    let (v, f) = live.decide(id, i, now);
                    Step::Done(self.admit(id, live, v, scope, now), f)
                } else {
                    match self.candidates(live, &digest, secret, imported) {
                        Err(i) => {
                            let (v, f) = live.decide(id, i, now);
                            Step::Done(self.admit(id, live, v, scope, now), f)
                        }
                        Ok(c) if c.is_empty() => {
                            Step::Done(Decision::Denied(Denial::WrongSecret), Freshness::Unknown)
                        }
                        Ok(candidates) => Step::Cold(Cold {
                            live: Arc::clone(live),
                            candidates,
                            digest,
                        }),
                    }
                }
            };
            if matches!(step, Step::Done(Decision::Denied(_), _)) {
                owner.clone_from(&live.owner);
            }
            step
        };
        let (decision, freshness) = match step {
            Step::Done(v, f) => (v, f),
            Step::Cold(cold) => {
                owner.clone_from(&cold.live.owner);
                self.verify_cold(id, secret, ip, scope, &cold)
            }
        };
        if decision.is_valid() {
            owner = None;
        }
        Some((decision, freshness, confirmed, owner))
    }

    /// The key id and the secret of a presented key: its parts when it is
    /// in this store's format, else the whole of it when it is a key
    /// imported from another system (found by its lookup, not a scan),
    /// and whether it is one.
    pub(crate) fn identify<'k>(&self, key: &'k [u8]) -> Option<(KeyId, &'k [u8], bool)> {
        match key::parse(key, &self.prefix) {
            Ok(p) => Some((p.id, p.secret, false)),
            Err(_) if key.len() <= MAX_IMPORTED_KEY_LEN => self
                .index
                .imports
                .find(key, &self.tag_key)
                .map(|id| (id, key, true)),
            Err(_) => None,
        }
    }

    /// The generations of `live` a secret not warm may be and needs argon2
    /// for: for a key of this store's format, those whose pre-check tag it
    /// matches (none, mostly, for a guess); for an imported key, its
    /// imported generations. `Err(i)` when generation `i` turned out warm
    /// with it.
    pub(crate) fn candidates(
        &self,
        live: &Live,
        digest: &crate::verifier::WarmDigest,
        secret: &[u8],
        imported: bool,
    ) -> Result<Vec<usize>, usize> {
        if imported {
            live.imported_candidates(digest)
        } else {
            let tag = self.tag_key.tag(secret);
            let legacy = live.has_legacy_tags().then(|| verifier::legacy_tag(secret));
            live.cold_candidates(digest, tag, legacy)
        }
    }

    /// The number of the generation among `candidates` the secret is,
    /// found with argon2 under the key's share of the hash gate and the
    /// gate itself (`Err(Busy)` past either bound); `Ok(None)` when none.
    pub(crate) fn cold_match(
        &self,
        id: KeyId,
        live: &Live,
        candidates: &[usize],
        digest: &crate::verifier::WarmDigest,
        secret: &[u8],
    ) -> Result<Option<u32>, Denial> {
        // A key's share of the gate, waited for as briefly as the gate's
        // queue: a burst of first uses of one key waits for the first.
        let Some(_share) = self
            .index
            .cold
            .share(id, self.hashes_per_key, verifier::QUEUE_WAIT)
        else {
            return Err(Denial::Busy);
        };
        // Another thread may have verified this very secret meanwhile.
        if let Some(i) = live.warm_match(digest) {
            return Ok(Some(live.gens[i].n));
        }
        // A key whose last hash was a miss rests (see ColdKeys::missed);
        // asked holding the share, so a miss that ended while this waited
        // for it counts.
        if self.index.cold.resting(&id, self.now_ms()) {
            return Err(Denial::Busy);
        }
        let Some(_pass) = self.gate.enter() else {
            return Err(Denial::Busy);
        };
        let started = std::time::Instant::now();
        let mut hashed = 0;
        let found = candidates
            .iter()
            .map(|&i| &live.gens[i])
            .find(|g| {
                hashed += 1;
                g.hash.verify(secret)
            })
            .map(|g| g.n);
        self.counters
            .hashes
            .fetch_add(hashed, std::sync::atomic::Ordering::Relaxed);
        if found.is_none() {
            self.index.cold.missed(id, started.elapsed(), self.now_ms());
        }
        Ok(found)
    }

    /// On a cache miss: one argon2 verify (bounded), then the cache is
    /// filled and the verdict taken from the index *as it is now*, so a
    /// regeneration that finished meanwhile is respected.
    fn verify_cold(
        &self,
        id: KeyId,
        secret: &[u8],
        ip: IpAddr,
        scope: Option<&str>,
        cold: &Cold,
    ) -> (Decision, Freshness) {
        let Cold {
            live,
            candidates,
            digest,
        } = cold;
        let n = match self.cold_match(id, live, candidates, digest, secret) {
            Err(busy) => return (Decision::Denied(busy), Freshness::Unknown),
            Ok(None) => return (Decision::Denied(Denial::WrongSecret), Freshness::Unknown),
            Ok(Some(n)) => n,
        };
        let now = self.now_ms();
        let Some(current) = self.index.get(&id) else {
            return (Decision::Denied(Denial::UnknownKey), Freshness::Unknown);
        };
        let Some(i) = current.gens.iter().position(|g| g.n == n) else {
            return (Decision::Denied(Denial::WrongSecret), Freshness::Unknown);
        };
        let _ = current.gens[i].warm.set(*digest);
        if let Some(d) = current.gatekeep(now, ip) {
            return (Decision::Denied(d), Freshness::Unknown);
        }
        // The key's first use in this process: its first lease, and what
        // earlier processes spent of its limits, before it answers (argon2
        // has just run; warm verifications never touch storage).
        if current
            .meter()
            .is_some_and(|m| m.first_use(self.budgets_shared()))
        {
            let _ = self.fetch_leases(&id);
        }
        let (v, f) = current.decide(id, i, now);
        (self.admit(id, &current, v, scope, now), f)
    }

    /// After the secret: the scope asked for, then the rate limits and the
    /// quota, spent only when everything admits the request.
    fn admit(
        &self,
        id: KeyId,
        live: &Live,
        verdict: Decision,
        scope: Option<&str>,
        now: i64,
    ) -> Decision {
        if !verdict.is_valid() {
            return verdict;
        }
        if scope.is_some_and(|s| !live.has_scope(s)) {
            return Decision::Denied(Denial::ScopeMissing);
        }
        if let Some(meter) = live.meter() {
            let a = meter.admit(now, self.budgets_shared());
            if a.fetch {
                self.leases.request(id);
            }
            if let Some(d) = a.refusal {
                return Decision::Denied(d);
            }
        }
        verdict
    }
}
