//! The key format: `<prefix>_<id>_<secret><check>`.
//!
//! id and secret are fixed-length base62, so a key is parsed from the right
//! and underscores in the prefix are unambiguous. The check is a CRC32 of
//! everything before it, so a typo or a truncated key is rejected before any
//! lookup or hashing.

use std::fmt;
use std::str::FromStr;

use rand::TryRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of a key id in base62 characters.
pub const ID_LEN: usize = 12;
/// Length of the secret part in base62 characters (32 random bytes).
pub(crate) const SECRET_LEN: usize = 43;
/// Length of the checksum in base62 characters (a CRC32).
pub(crate) const CHECK_LEN: usize = 6;
/// Longest prefix a store accepts.
pub(crate) const MAX_PREFIX_LEN: usize = 16;
/// Longest key of any store, in bytes: anything longer is malformed at once.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 2 + ID_LEN + SECRET_LEN + CHECK_LEN;

const TAIL_LEN: usize = SECRET_LEN + CHECK_LEN;

fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the operating system cannot provide randomness: no key may be issued then.
pub(crate) fn os_random(buf: &mut [u8]) {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .expect("the operating system's random number generator failed");
}

/// `n` uniformly random base62 characters (rejection sampling, no modulo bias).
pub(crate) fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut pool = [0u8; 64];
    while out.len() < n {
        os_random(&mut pool);
        for &b in &pool {
            if b < 248 && out.len() < n {
                out.push(BASE62[usize::from(b % 62)] as char);
            }
        }
    }
    pool.zeroize();
    out
}

/// Fixed-width big-endian base62 of a byte string (a big number), `width` digits.
fn base62_fixed(bytes: &[u8], width: usize) -> String {
    let mut num: Zeroizing<Vec<u8>> = Zeroizing::new(bytes.to_vec());
    let mut digits = Zeroizing::new(vec![0u8; width]);
    for slot in digits.iter_mut().rev() {
        let mut rem: u32 = 0;
        for byte in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = u8::try_from(acc / 62).expect("quotient of a byte-sized step fits a byte");
            rem = acc % 62;
        }
        *slot = BASE62[rem as usize];
    }
    digits.iter().map(|&d| d as char).collect()
}

/// The CRC32 of `body` as six base62 digits, on the stack: parsing runs on
/// every verification and allocates nothing.
fn checksum(body: &[u8]) -> [u8; CHECK_LEN] {
    let mut crc = crc32fast::hash(body);
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

/// Checks a store prefix: `[a-z][a-z0-9_]{0,15}`, not ending in `_`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), String> {
    let bytes = prefix.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_PREFIX_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !prefix.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key prefix {prefix:?}: expected [a-z][a-z0-9_]{{0,15}} not ending in '_'"
        ))
    }
}

/// A key's public id: 12 base62 characters, random, stable across regenerations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; ID_LEN]);

impl KeyId {
    pub(crate) fn random() -> Self {
        let s = random_base62(ID_LEN);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(s.as_bytes());
        KeyId(id)
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a key id is ASCII by construction")
    }

    pub(crate) fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

/// A map by key id, hashed by a seeded multiply instead of SipHash: the
/// ids in such maps are the store's, drawn at random, so mixing is all
/// a hash of them needs; the seed (one per map) keeps where they land
/// unknown outside the process.
pub(crate) type IdMap<V> = std::collections::HashMap<KeyId, V, IdHashing>;

/// The hashing of an [`IdMap`]: its seed.
#[derive(Clone)]
pub(crate) struct IdHashing(u64);

impl Default for IdHashing {
    fn default() -> Self {
        use std::hash::{BuildHasher, RandomState};
        IdHashing(RandomState::new().hash_one(0_u64))
    }
}

impl std::hash::BuildHasher for IdHashing {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            // A folded multiply by an odd constant (the golden ratio's).
            let p = u128::from(self.0 ^ u64::from_le_bytes(word)) * 0x9e37_79b9_7f4a_7c15;
            self.0 = (p as u64) ^ ((p >> 64) as u64);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The text given where a key id was expected is not one. The message
/// never repeats a secret: a whole key pasted where its id belongs is named
/// by its id only, text longer than an id is not quoted, and what is quoted
/// has its control characters escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKeyId(String);

/// Longest text an invalid-id message quotes.
const QUOTED_AT_MOST: usize = 20;

impl InvalidKeyId {
    pub(crate) fn for_text(s: &str) -> Self {
        if let Some(id) = id_of_whole_key(s) {
            return InvalidKeyId(format!(
                "that is a whole key (not shown: it is a secret), not a key id; its id is {id}"
            ));
        }
        if s.chars().count() > QUOTED_AT_MOST {
            return InvalidKeyId(format!(
                "invalid key id (a {}-character text, not shown): expected {ID_LEN} base62 characters",
                s.chars().count()
            ));
        }
        InvalidKeyId(format!(
            "invalid key id {s:?}: expected {ID_LEN} base62 characters"
        ))
    }
}

/// The id of `s` if it has the shape of a whole key (`<prefix>_<id>_<tail>`),
/// checksum or not.
fn id_of_whole_key(s: &str) -> Option<KeyId> {
    let b = s.as_bytes();
    let n = b.len();
    if !(1 + 2 + ID_LEN + TAIL_LEN..=MAX_KEY_LEN).contains(&n) {
        return None;
    }
    let tail = &b[n - TAIL_LEN..];
    let id = &b[n - TAIL_LEN - 1 - ID_LEN..n - TAIL_LEN - 1];
    let shaped = b[n - TAIL_LEN - 1] == b'_'
        && b[n - TAIL_LEN - 2 - ID_LEN] == b'_'
        && tail.iter().all(|&c| is_base62(c))
        && id.iter().all(|&c| is_base62(c));
    shaped.then(|| {
        let mut bytes = [0u8; ID_LEN];
        bytes.copy_from_slice(id);
        KeyId(bytes)
    })
}

impl fmt::Display for InvalidKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidKeyId {}

impl InvalidKeyId {
    /// How the bindings report it: [`ErrorKind::InvalidKeyId`](crate::ErrorKind::InvalidKeyId).
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidKeyId
    }
}

impl FromStr for KeyId {
    type Err = InvalidKeyId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != ID_LEN || !b.iter().all(|&c| is_base62(c)) {
            return Err(InvalidKeyId::for_text(s));
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(b);
        Ok(KeyId(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The id as a string.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for KeyId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KeyId".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "key-id" })
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A plaintext API key, returned once by create and regenerate.
///
/// Its memory is zeroed on drop and `Debug` shows only the masked form.
pub struct PlaintextKey(Zeroizing<String>);

impl PlaintextKey {
    /// The whole key, to hand to the customer once. Never store or log it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The display form: prefix, id and the last four characters.
    #[must_use]
    pub fn masked(&self) -> String {
        let (head, tail) = split_for_mask(&self.0);
        mask_from_parts(head, tail)
    }
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlaintextKey({} [redacted])", self.masked())
    }
}

fn split_for_mask(key: &str) -> (&str, &str) {
    // `key` is always well-formed here: `<prefix>_<id>_` then the tail.
    let head_end = key.len() - TAIL_LEN;
    (&key[..head_end], &key[key.len() - 4..])
}

/// `kw_4fK9xQ2mLp7A_…` + the last four characters.
pub(crate) fn mask_from_parts(head: &str, last4: &str) -> String {
    format!("{head}\u{2026}{last4}")
}

/// The masked form of a key given its prefix, id and last four characters.
pub(crate) fn mask(prefix: &str, id: &KeyId, last4: &str) -> String {
    mask_from_parts(&format!("{prefix}_{id}_"), last4)
}

/// A freshly generated key: the plaintext and what the store keeps of it.
pub(crate) struct Generated {
    pub key: PlaintextKey,
    /// The secret part (43 base62 characters) as bytes: what gets hashed.
    pub secret: Zeroizing<Vec<u8>>,
    /// Last four characters of the key, for the masked display form.
    pub last4: String,
}

pub(crate) fn generate(prefix: &str, id: &KeyId) -> Generated {
    let mut raw = Zeroizing::new([0u8; 32]);
    os_random(raw.as_mut());
    let secret = Zeroizing::new(base62_fixed(raw.as_ref(), SECRET_LEN));
    let mut body = Zeroizing::new(String::with_capacity(MAX_KEY_LEN));
    body.push_str(prefix);
    body.push('_');
    body.push_str(id.as_str());
    body.push('_');
    body.push_str(&secret);
    let check = checksum(body.as_bytes());
    body.push_str(std::str::from_utf8(&check).expect("base62 is ASCII"));
    let last4 = body[body.len() - 4..].to_string();
    Generated {
        key: PlaintextKey(body),
        secret: Zeroizing::new(secret.as_bytes().to_vec()),
        last4,
    }
}

/// Why a presented key was rejected before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Too short or too long for this store's prefix.
    Length,
    /// Not this store's prefix.
    Prefix,
    /// Missing `_` separators, or a character outside base62.
    Syntax,
    /// The checksum does not match: a typo or a truncated key.
    Checksum,
}

/// A syntactically valid key: its id and the secret part, borrowed from the input.
#[derive(Clone, Copy)]
pub(crate) struct Parsed<'a> {
    pub id: KeyId,
    pub secret: &'a [u8],
}

/// Parses `key` for a store whose prefix is `prefix`; checks length, prefix,
/// characters and checksum, in that order, before anything is looked up.
pub(crate) fn parse<'a>(key: &'a [u8], prefix: &str) -> Result<Parsed<'a>, Malformed> {
    let expected = prefix.len() + 2 + ID_LEN + TAIL_LEN;
    if key.len() != expected {
        return Err(Malformed::Length);
    }
    let p = prefix.len();
    if &key[..p] != prefix.as_bytes() {
        return Err(Malformed::Prefix);
    }
    let id_bytes = &key[p + 1..p + 1 + ID_LEN];
    let tail = &key[p + 2 + ID_LEN..];
    if key[p] != b'_'
        || key[p + 1 + ID_LEN] != b'_'
        || !id_bytes.iter().all(|&b| is_base62(b))
        || !tail.iter().all(|&b| is_base62(b))
    {
        return Err(Malformed::Syntax);
    }
    let (secret, check) = tail.split_at(SECRET_LEN);
    if checksum(&key[..expected - CHECK_LEN]) != check {
        return Err(Malformed::Checksum);
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(id_bytes);
    Ok(Parsed {
        id: KeyId(id),
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_id_never_repeats_a_secret() {
        let id = KeyId::random();
        let whole = generate("kw", &id).key;
        let e = whole.as_str().parse::<KeyId>().unwrap_err().to_string();
        assert!(e.contains(id.as_str()) && e.contains("whole key"), "{e}");
        let secret = &whole.as_str()[16..];
        assert!(!e.contains(&secret[..8]), "{e}");
        // A bare secret, or anything long: not quoted at all.
        let e = secret.parse::<KeyId>().unwrap_err().to_string();
        assert!(!e.contains(&secret[..8]) && e.contains("not shown"), "{e}");
        // Short text is quoted, control characters escaped.
        let e = "ab\u{1b}[2Jcd".parse::<KeyId>().unwrap_err().to_string();
        assert!(e.contains("\\u{1b}") && !e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_parse_back() {
        let id = KeyId::random();
        let g = generate("acme_live", &id);
        let k = g.key.as_str();
        assert_eq!(
            k.len(),
            "acme_live".len() + 2 + ID_LEN + SECRET_LEN + CHECK_LEN
        );
        assert!(k.starts_with(&format!("acme_live_{id}_")));
        let parsed = parse(k.as_bytes(), "acme_live").unwrap();
        assert_eq!(parsed.id, id);
        assert_eq!(parsed.secret, g.secret.as_slice());
        assert_eq!(
            g.key.masked(),
            format!("acme_live_{id}_\u{2026}{}", &k[k.len() - 4..])
        );
    }

    #[test]
    fn parse_rejects_each_kind_of_damage() {
        let id = KeyId::random();
        let g = generate("kw", &id);
        let k = g.key.as_str().to_string();
        assert_eq!(
            parse(&k.as_bytes()[..k.len() - 1], "kw").err(),
            Some(Malformed::Length)
        );
        assert_eq!(
            parse(format!("{k}x").as_bytes(), "kw").err(),
            Some(Malformed::Length)
        );
        let other = format!("kx{}", &k[2..]);
        assert_eq!(parse(other.as_bytes(), "kw").err(), Some(Malformed::Prefix));
        let mut bad_char = k.clone().into_bytes();
        bad_char[20] = b'-';
        assert_eq!(parse(&bad_char, "kw").err(), Some(Malformed::Syntax));
        let mut typo = k.clone().into_bytes();
        typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse(&typo, "kw").err(), Some(Malformed::Checksum));
        let mut no_sep = k.into_bytes();
        no_sep[2] = b'x';
        assert_eq!(parse(&no_sep, "kw").err(), Some(Malformed::Syntax));
    }

    #[test]
    fn base62_fixed_width_round_numbers() {
        assert_eq!(base62_fixed(&[0, 0], 3), "000");
        assert_eq!(base62_fixed(&[0, 61], 2), "0z");
        assert_eq!(base62_fixed(&[0, 62], 2), "10");
        assert_eq!(base62_fixed(&[0xff; 32], SECRET_LEN).len(), SECRET_LEN);
    }

    #[test]
    fn prefixes_are_validated() {
        for good in ["kw", "acme_live", "a", "a1_b2"] {
            assert!(validate_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", "Kw", "1kw", "kw_", "kw-live", "abcdefghijklmnopq"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let g = generate("kw", &KeyId::random());
        let shown = format!("{:?}", g.key);
        let secret = std::str::from_utf8(&g.secret).unwrap();
        assert!(!shown.contains(secret));
        assert!(shown.contains("redacted"));
    }
}
