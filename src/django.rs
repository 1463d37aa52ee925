//! Hashes in the formats of Django's password hashers, as
//! djangorestframework-api-key keeps its keys: `sha512$$<hex>` (its own
//! hasher, the default since 3.0) and `pbkdf2_sha256$<iterations>$<salt>$
//! <base64>` (Django's default hasher, which 2.x used through
//! `make_password`). Keys imported with such a hash keep working.

use base64::Engine as _;
use sha2::Digest;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The most PBKDF2 iterations an imported hash may ask for (Django 5.2
/// uses 1,000,000): more would let whoever supplied the hashes make each
/// guess at an imported key hold the hash gate for seconds.
pub const MAX_IMPORTED_PBKDF2_ITERATIONS: u32 = 2_000_000;

/// A Django hash, read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DjangoHash<'a> {
    /// djangorestframework-api-key's `Sha512ApiKeyHasher`: the SHA-512 of
    /// the key, 128 lowercase hexadecimal digits.
    Sha512(&'a str),
    /// Django's `PBKDF2PasswordHasher`: HMAC-SHA256, the salt as text,
    /// the 32-byte result in standard base64.
    Pbkdf2Sha256 {
        iterations: u32,
        salt: &'a str,
        hash: &'a str,
    },
}

impl<'a> DjangoHash<'a> {
    /// `text` as a Django hash, when it is one of the formats above
    /// (whatever its numbers: see [`DjangoHash::check`]).
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        if let Some(hex) = text.strip_prefix("sha512$$") {
            return Some(DjangoHash::Sha512(hex));
        }
        let mut parts = text.strip_prefix("pbkdf2_sha256$")?.splitn(3, '$');
        let iterations = parts.next()?.parse().ok()?;
        let salt = parts.next()?;
        let hash = parts.next()?;
        Some(DjangoHash::Pbkdf2Sha256 {
            iterations,
            salt,
            hash,
        })
    }

    /// Whether the hash is usable and within the bound above; the error
    /// says what is wrong.
    pub(crate) fn check(&self) -> Result<(), String> {
        match *self {
            DjangoHash::Sha512(hex) => {
                if hex.len() == 128 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(())
                } else {
                    Err("a sha512$$ hash is 128 hexadecimal digits".into())
                }
            }
            DjangoHash::Pbkdf2Sha256 {
                iterations,
                salt,
                hash,
            } => {
                if iterations == 0 || iterations > MAX_IMPORTED_PBKDF2_ITERATIONS {
                    return Err(format!(
                        "PBKDF2 iterations {iterations} are not 1 to {MAX_IMPORTED_PBKDF2_ITERATIONS}, \
                         the most an imported hash may have"
                    ));
                }
                if salt.is_empty() || salt.contains('$') {
                    return Err("a pbkdf2_sha256 hash has a salt".into());
                }
                match base64::engine::general_purpose::STANDARD.decode(hash) {
                    Ok(bytes) if bytes.len() == 32 => Ok(()),
                    _ => Err("a pbkdf2_sha256 hash ends with 32 bytes in base64".into()),
                }
            }
        }
    }

    /// Whether `secret` hashes to this (in constant time over the result).
    pub(crate) fn verify(&self, secret: &[u8]) -> bool {
        match *self {
            DjangoHash::Sha512(hex) => {
                let Some(expected) = hex_bytes(hex) else {
                    return false;
                };
                let digest = sha2::Sha512::digest(secret);
                bool::from(digest[..].ct_eq(&expected[..]))
            }
            DjangoHash::Pbkdf2Sha256 {
                iterations,
                salt,
                hash,
            } => {
                let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(hash) else {
                    return false;
                };
                let mut out = Zeroizing::new([0u8; 32]);
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                    secret,
                    salt.as_bytes(),
                    iterations,
                    out.as_mut(),
                );
                bool::from(out[..].ct_eq(&expected[..]))
            }
        }
    }
}

/// The bytes hex digits stand for (either case); none for an odd count
/// or a character that is no hex digit.
pub(crate) fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| char::from(b).to_digit(16);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with Python: hashlib.sha512(b"AbCdEfGh.secret").hexdigest(), and
    // base64.b64encode(hashlib.pbkdf2_hmac("sha256", b"AbCdEfGh.secret",
    // b"saltsalt", 1000)) (what Django's make_password writes).
    const KEY: &[u8] = b"AbCdEfGh.secret";
    const SHA512: &str = "sha512$$a916cf7b658a4b38fa276276e8f958b41a53f77d70c997b9c036b822789c0384c43742e034c19fd1db34052079d58d1ee96b7f9ff0e91749e53bbafd6a7839c5";
    const PBKDF2: &str = "pbkdf2_sha256$1000$saltsalt$4OJVt07dnAlEioubgA5Qw+pLEQ3+eIv1nJdBZNSUV78=";

    #[test]
    fn both_formats_verify_their_key_and_no_other() {
        for text in [SHA512, PBKDF2] {
            let h = DjangoHash::parse(text).unwrap();
            h.check().unwrap();
            assert!(h.verify(KEY), "{text}");
            assert!(!h.verify(b"AbCdEfGh.secreT"), "{text}");
        }
    }

    #[test]
    fn bad_numbers_and_shapes_are_refused() {
        let too_many = format!(
            "pbkdf2_sha256$3000000$s${}",
            PBKDF2.rsplit('$').next().unwrap()
        );
        assert!(DjangoHash::parse(&too_many).unwrap().check().is_err());
        assert!(DjangoHash::parse("sha512$$abc").unwrap().check().is_err());
        assert!(
            DjangoHash::parse("pbkdf2_sha256$1000$s$notbase64")
                .unwrap()
                .check()
                .is_err()
        );
        assert_eq!(DjangoHash::parse("pbkdf2_sha256$many$s$x"), None);
        assert_eq!(DjangoHash::parse("$2b$12$abc"), None);
    }
}
