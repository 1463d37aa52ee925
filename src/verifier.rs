//! Secret verifiers: argon2id at rest, a 32-bit pre-check tag, and the warm
//! cache digest.
//!
//! The warm digest is a BLAKE3 hash keyed with a random per-process key that
//! never leaves memory, so a cache entry is useless to anyone who reads it
//! from outside the process.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use argon2::{Algorithm, Argon2, PasswordHasher, PasswordVerifier, Version};
use zeroize::Zeroizing;

use crate::django::DjangoHash;
use crate::key::os_random;

/// argon2id cost parameters for newly hashed secrets.
///
/// Each stored hash records its own parameters, so raising them later only
/// affects keys created or regenerated afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// argon2's defaults: 19 MiB, 2 iterations, 1 lane (≈ 20 ms here).
    fn default() -> Self {
        Argon2Params {
            memory_kib: argon2::Params::DEFAULT_M_COST,
            iterations: argon2::Params::DEFAULT_T_COST,
            parallelism: argon2::Params::DEFAULT_P_COST,
        }
    }
}

impl Argon2Params {
    pub(crate) fn hasher(self) -> Result<Argon2<'static>, String> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters {self:?}: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes a secret to an argon2id PHC string with a fresh random salt.
pub(crate) fn hash_secret(hasher: &Argon2<'_>, secret: &[u8]) -> Result<String, String> {
    let mut salt = Zeroizing::new([0u8; 16]);
    os_random(salt.as_mut());
    hasher
        .hash_password_with_salt(secret, salt.as_ref())
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2 hashing failed: {e}"))
}

/// Checks a secret against a PHC string, with the parameters the string records.
pub(crate) fn verify_secret(phc: &str, secret: &[u8]) -> bool {
    PasswordVerifier::<str>::verify_password(&Argon2::default(), secret, phc).is_ok()
}

/// The numbers and bytes of an argon2id v19 PHC string
/// (`$argon2id$v=19$m=M,t=T,p=P$<salt>$<output>`): how key records and the
/// verify index hold the hashes keyward makes.
pub(crate) struct Argon2idParts {
    pub m: u32,
    pub t: u32,
    pub p: u32,
    pub salt: Vec<u8>,
    pub output: Vec<u8>,
}

impl Argon2idParts {
    /// The parts of `phc`, when it is argon2id v19 with exactly m, t, p.
    pub(crate) fn parse(phc: &str) -> Option<Self> {
        use argon2::password_hash::phc::PasswordHash;
        let h = PasswordHash::new(phc).ok()?;
        if h.algorithm.as_str() != "argon2id"
            || h.version != Some(19)
            || h.params.iter().count() != 3
        {
            return None;
        }
        Some(Argon2idParts {
            m: h.params.get_decimal("m")?,
            t: h.params.get_decimal("t")?,
            p: h.params.get_decimal("p")?,
            salt: h.salt?.as_ref().to_vec(),
            output: h.hash?.as_bytes().to_vec(),
        })
    }

    /// The PHC string of these parts.
    pub(crate) fn to_phc(m: u32, t: u32, p: u32, salt: &[u8], output: &[u8]) -> Option<String> {
        use argon2::password_hash::phc::{Ident, Output, ParamsString, PasswordHash, Salt};
        let mut params = ParamsString::new();
        params.add_decimal("m", m).ok()?;
        params.add_decimal("t", t).ok()?;
        params.add_decimal("p", p).ok()?;
        let hash = PasswordHash {
            algorithm: Ident::new("argon2id").ok()?,
            version: Some(19),
            params,
            salt: Some(Salt::new(salt).ok()?),
            hash: Some(Output::new(output).ok()?),
        };
        Some(hash.to_string())
    }
}

/// A secret's hash as the verify index holds it: every hash keyward makes
/// (argon2id v19, 16-byte salt, 32-byte output) as its numbers and bytes,
/// an imported key's SHA-256 as its bytes, anything else as its PHC text
/// (argon2 of other kinds, bcrypt).
pub(crate) enum SecretHash {
    /// `t` and `p` of a width that holds any sensible value (a hash
    /// whose numbers do not fit is held as its PHC text).
    Argon2id {
        m: u32,
        t: u16,
        p: u8,
        salt: [u8; 16],
        output: [u8; 32],
    },
    /// The SHA-256 of an imported key (`$sha256$<hex>` in records).
    Sha256([u8; 32]),
    Phc(Box<str>),
}

/// How a SHA-256 digest is written where a PHC string goes.
pub(crate) const SHA256_PHC: &str = "$sha256$";

/// The most an imported hash may cost to check: what a login server
/// would use. More would let whoever supplied the hashes make each wrong
/// guess against an imported key (its prefix is public) occupy the hash
/// gate for seconds, or allocate gigabytes.
pub const MAX_IMPORTED_BCRYPT_COST: u32 = 14;
/// argon2 memory, KiB (256 MiB).
pub const MAX_IMPORTED_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
/// argon2 time (iterations).
pub const MAX_IMPORTED_ARGON2_TIME: u32 = 16;
/// argon2 parallelism (lanes).
pub const MAX_IMPORTED_ARGON2_PARALLELISM: u32 = 8;

/// What an imported hash that is none of the known ones is told.
pub(crate) const NOT_A_KNOWN_HASH: &str = "the hash is neither bcrypt ($2b$…), argon2 ($argon2id$…), \
     PBKDF2 (pbkdf2_sha256$…) nor SHA-512 (sha512$$…, djangorestframework-api-key's)";

/// Whether an imported bcrypt, argon2 or Django hash is usable and within the
/// bounds above; the error names the parameter and its bound.
pub(crate) fn check_imported_hash(phc: &str) -> Result<(), String> {
    if let Some(django) = DjangoHash::parse(phc) {
        return django.check();
    }
    if is_bcrypt(phc) {
        let parts = phc
            .parse::<bcrypt::HashParts>()
            .map_err(|_| "the hash is not a well-formed bcrypt hash".to_string())?;
        let cost = parts.get_cost();
        if cost > MAX_IMPORTED_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {cost} is over {MAX_IMPORTED_BCRYPT_COST}, the most an imported hash may have"
            ));
        }
        return Ok(());
    }
    let h = argon2::password_hash::phc::PasswordHash::new(phc)
        .ok()
        .filter(|h| matches!(h.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d"))
        .ok_or_else(|| NOT_A_KNOWN_HASH.to_string())?;
    for (name, what, most) in [
        ("m", "memory (m, KiB)", MAX_IMPORTED_ARGON2_MEMORY_KIB),
        ("t", "time (t)", MAX_IMPORTED_ARGON2_TIME),
        ("p", "parallelism (p)", MAX_IMPORTED_ARGON2_PARALLELISM),
    ] {
        let Some(value) = h.params.get_str(name) else {
            continue;
        };
        match value.parse::<u64>() {
            Ok(v) if v <= u64::from(most) => {}
            _ => {
                return Err(format!(
                    "argon2 {what} {value} is over {most}, the most an imported hash may have"
                ));
            }
        }
    }
    // The parameters argon2 itself accepts.
    argon2::Params::try_from(&h)
        .map(drop)
        .map_err(|e| format!("the argon2 hash's parameters are not usable: {e}"))
}

/// Whether `phc` is a bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`).
pub(crate) fn is_bcrypt(phc: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| phc.starts_with(p))
}

/// The bytes of 64 hexadecimal digits.
pub(crate) fn hex32(hex: &str) -> Option<[u8; 32]> {
    crate::django::hex_bytes(hex)?.try_into().ok()
}

/// The SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

impl SecretHash {
    /// From a PHC string (as key records of format 1 hold it).
    pub(crate) fn from_phc(phc: &str) -> Self {
        if let Some(digest) = phc.strip_prefix(SHA256_PHC).and_then(hex32) {
            return SecretHash::Sha256(digest);
        }
        Argon2idParts::parse(phc)
            .and_then(|h| Self::argon2id(h.m, h.t, h.p, &h.salt, &h.output))
            .unwrap_or_else(|| SecretHash::Phc(phc.into()))
    }

    /// From an argon2id v19 hash's numbers and bytes, when the salt and
    /// output have the usual lengths.
    pub(crate) fn argon2id(m: u32, t: u32, p: u32, salt: &[u8], output: &[u8]) -> Option<Self> {
        Some(SecretHash::Argon2id {
            m,
            t: t.try_into().ok()?,
            p: p.try_into().ok()?,
            salt: salt.try_into().ok()?,
            output: output.try_into().ok()?,
        })
    }

    /// Whether `secret` hashes to this.
    pub(crate) fn verify(&self, secret: &[u8]) -> bool {
        match self {
            SecretHash::Sha256(digest) => bool::from(subtle::ConstantTimeEq::ct_eq(
                &sha256(secret)[..],
                &digest[..],
            )),
            // bcrypt reads at most 72 bytes, as the systems that made the hash did.
            SecretHash::Phc(phc) if is_bcrypt(phc) => bcrypt::verify(secret, phc).unwrap_or(false),
            SecretHash::Phc(phc) => match DjangoHash::parse(phc) {
                Some(django) => django.verify(secret),
                None => verify_secret(phc, secret),
            },
            SecretHash::Argon2id {
                m,
                t,
                p,
                salt,
                output,
            } => {
                let params =
                    argon2::Params::new(*m, u32::from(*t), u32::from(*p), Some(output.len()));
                let Ok(params) = params else {
                    return false;
                };
                let mut out = Zeroizing::new([0u8; 32]);
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(secret, salt, out.as_mut())
                    .is_ok()
                    && bool::from(subtle::ConstantTimeEq::ct_eq(&out[..], &output[..]))
            }
        }
    }

    /// Heap bytes beyond the value itself.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            SecretHash::Phc(phc) => phc.len(),
            SecretHash::Argon2id { .. } | SecretHash::Sha256(_) => 0,
        }
    }
}

/// The key of a store's 32-bit pre-check tags, kept at rest beside the
/// hashes: a truncated keyed BLAKE3 of the secret. A secret whose tag
/// differs cannot match, so no argon2 runs for it. The key is random per
/// store, so nobody without the store's data can search offline for a
/// secret that passes another key's tag and costs it an argon2 run.
pub(crate) struct TagKey {
    key: Zeroizing<[u8; 32]>,
    /// Derived from `key`: the key of imported keys' lookups.
    import: Zeroizing<[u8; 32]>,
}

impl TagKey {
    pub(crate) fn random() -> [u8; 32] {
        let mut k = [0u8; 32];
        os_random(&mut k);
        k
    }

    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        TagKey {
            import: Zeroizing::new(blake3::derive_key(
                "keyward 2026-11 imported key lookup v1",
                &bytes,
            )),
            key: Zeroizing::new(bytes),
        }
    }

    pub(crate) fn tag(&self, secret: &[u8]) -> u32 {
        truncated(&blake3::keyed_hash(&self.key, secret))
    }

    /// The key of plugins' delivery ids (`webhook-id`): derived from this
    /// one, so ids are the store's own and reveal nothing of it.
    #[cfg(feature = "plugins")]
    pub(crate) fn delivery_id_key(&self) -> [u8; 32] {
        blake3::derive_key("keyward 2026-12 plugin delivery id v1", &*self.key)
    }

    /// The lookup of a key imported as plaintext: a keyed hash of the whole
    /// key under a key derived from this one (never the tag itself).
    pub(crate) fn import_lookup(&self, key: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.import, key).as_bytes()
    }
}

/// The tag of generations hashed before their store had a tag key: keyed
/// with a public constant. They keep it until their key is regenerated.
pub(crate) fn legacy_tag(secret: &[u8]) -> u32 {
    static LEGACY_KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key =
        LEGACY_KEY.get_or_init(|| blake3::derive_key("keyward 2026-11 pre-check tag v1", b""));
    truncated(&blake3::keyed_hash(key, secret))
}

fn truncated(hash: &blake3::Hash) -> u32 {
    u32::from_le_bytes(hash.as_bytes()[..4].try_into().expect("4 bytes"))
}

/// A secret's warm digest: its keyed BLAKE3, 128 bits (the key is random
/// per process and never leaves it, so a digest that matches by chance is
/// as likely as guessing the key; a million keys' digests take half the
/// memory of full ones).
pub(crate) type WarmDigest = [u8; 16];

/// The key of the warm cache, random per process.
pub(crate) struct WarmKey(Zeroizing<[u8; 32]>);

impl WarmKey {
    pub(crate) fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        os_random(k.as_mut());
        WarmKey(k)
    }

    pub(crate) fn digest(&self, secret: &[u8]) -> WarmDigest {
        let full = blake3::keyed_hash(&self.0, secret);
        let mut d = [0u8; 16];
        d.copy_from_slice(&full.as_bytes()[..16]);
        d
    }
}

/// How long a cold verification waits for room (about two hash times)
/// before answering `Busy`.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_millis(100);

/// Bounds how many argon2 verifications run at once, with a short queue.
///
/// A flood of cold or forged keys must not take every core: past the bound
/// and the queue, verification answers `Busy` at once.
pub(crate) struct HashGate {
    state: Mutex<GateState>,
    freed: Condvar,
    max_running: usize,
    max_waiting: usize,
    /// Passes that waited for a slot, and callers turned away.
    waits: std::sync::atomic::AtomicU64,
    refusals: std::sync::atomic::AtomicU64,
}

struct GateState {
    running: usize,
    waiting: usize,
}

pub(crate) struct GatePass<'a>(&'a HashGate);

impl HashGate {
    pub(crate) fn new(max_running: usize, max_waiting: usize) -> Self {
        HashGate {
            state: Mutex::new(GateState {
                running: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            max_running: max_running.max(1),
            max_waiting,
            waits: std::sync::atomic::AtomicU64::new(0),
            refusals: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Passes that had to wait for a slot, so far.
    pub(crate) fn waits(&self) -> u64 {
        self.waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Callers turned away (queue full, or the wait too long), so far.
    pub(crate) fn refusals(&self) -> u64 {
        self.refusals.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A pass to run one argon2 verification, or `None` when over the bound.
    pub(crate) fn enter(&self) -> Option<GatePass<'_>> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.running < self.max_running {
            st.running += 1;
            return Some(GatePass(self));
        }
        if st.waiting >= self.max_waiting {
            self.refusals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        st.waiting += 1;
        self.waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let deadline = std::time::Instant::now() + QUEUE_WAIT;
        while st.running >= self.max_running {
            let now = std::time::Instant::now();
            if now >= deadline {
                st.waiting -= 1;
                self.refusals
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        st.waiting -= 1;
        st.running += 1;
        Some(GatePass(self))
    }
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        let mut st = self
            .0
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.running -= 1;
        drop(st);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Argon2Params = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn hash_then_verify_records_parameters() {
        let h = FAST.hasher().unwrap();
        let phc = hash_secret(&h, b"s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify_secret(&phc, b"s3cret"));
        assert!(!verify_secret(&phc, b"s3cres"));
        assert_ne!(phc, hash_secret(&h, b"s3cret").unwrap(), "salts differ");
    }

    #[test]
    fn bad_parameters_are_an_error() {
        let bad = Argon2Params {
            memory_kib: 1,
            ..FAST
        };
        assert!(bad.hasher().is_err());
    }

    #[test]
    fn gate_refuses_past_running_and_waiting_bounds() {
        let gate = HashGate::new(1, 0);
        let first = gate.enter().expect("first pass");
        assert!(gate.enter().is_none(), "no room, no queue: refused");
        drop(first);
        assert!(gate.enter().is_some(), "room again after release");
    }

    #[test]
    fn warm_digests_are_keyed_per_process() {
        let a = WarmKey::random();
        let b = WarmKey::random();
        assert_eq!(a.digest(b"x"), a.digest(b"x"));
        assert_ne!(a.digest(b"x"), b.digest(b"x"));
    }
}

#[cfg(test)]
mod secret_hash_tests {
    use super::*;

    #[test]
    fn the_compact_hash_verifies_exactly_as_its_phc_text() {
        let hasher = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
        .hasher()
        .unwrap();
        let phc = hash_secret(&hasher, b"the secret").unwrap();
        let compact = SecretHash::from_phc(&phc);
        assert!(matches!(
            compact,
            SecretHash::Argon2id {
                m: 64,
                t: 1,
                p: 1,
                ..
            }
        ));
        assert!(compact.verify(b"the secret"));
        assert!(!compact.verify(b"the secreT"));
        assert!(!compact.verify(b""));
        let text = SecretHash::Phc(phc.into());
        assert!(text.verify(b"the secret") && !text.verify(b"other"));
        let other =
            "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA";
        assert!(matches!(SecretHash::from_phc(other), SecretHash::Phc(_)));
        assert!(matches!(
            SecretHash::from_phc("garbage"),
            SecretHash::Phc(_)
        ));
    }
}
