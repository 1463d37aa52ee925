//! Standard Webhooks on plugins' requests: the delivery id every attempt
//! at one event by one plugin shares, and the signature headers the host
//! adds over the exact body a plugin sends.
//!
//! The signed content is `id.timestamp.body`; each signature is
//! `v1,` and the base64 of its HMAC-SHA256 under one secret, and the
//! header holds one per secret (space separated), so a receiver holding
//! either the old or the new secret verifies while a secret is rotated.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use zeroize::Zeroizing;

/// The Standard Webhooks header names.
pub(crate) const ID: &str = "webhook-id";
pub(crate) const TIMESTAMP: &str = "webhook-timestamp";
pub(crate) const SIGNATURE: &str = "webhook-signature";

/// The delivery id of event `seq` to plugin `plugin`: a keyed hash under
/// a key derived from the store's own random key, so ids of two stores
/// never meet at one receiver, and a copy of a store (which keeps its
/// key and event numbers) names a redelivered event as the original did.
pub(crate) fn delivery_id(id_key: &[u8; 32], plugin: &str, seq: u64) -> String {
    let mut h = blake3::Hasher::new_keyed(id_key);
    h.update(&(plugin.len() as u64).to_be_bytes());
    h.update(plugin.as_bytes());
    h.update(&seq.to_be_bytes());
    format!("msg_{}", &h.finalize().to_hex()[..32])
}

/// Signs a plugin's requests with its manifest's secrets.
pub(crate) struct Signer {
    secrets: Vec<Zeroizing<Vec<u8>>>,
}

impl Signer {
    pub(crate) fn new(secrets: Vec<Zeroizing<Vec<u8>>>) -> Signer {
        Signer { secrets }
    }

    /// `headers` with the plugin's own `webhook-*` headers taken out and
    /// the host's three added, signing `body` as sent at `timestamp`
    /// (Unix seconds).
    pub(crate) fn sign(
        &self,
        headers: &[(String, String)],
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = headers
            .iter()
            .filter(|(name, _)| {
                ![ID, TIMESTAMP, SIGNATURE].contains(&name.to_ascii_lowercase().as_str())
            })
            .cloned()
            .collect();
        let signatures: Vec<String> = self
            .secrets
            .iter()
            .map(|secret| {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
                    .expect("HMAC takes a key of any length");
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                let tag = mac.finalize().into_bytes();
                format!(
                    "v1,{}",
                    base64::engine::general_purpose::STANDARD.encode(tag)
                )
            })
            .collect();
        out.push((ID.into(), id.into()));
        out.push((TIMESTAMP.into(), timestamp.to_string()));
        out.push((SIGNATURE.into(), signatures.join(" ")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example: secret, id,
    /// timestamp and payload, and the signature it gives.
    #[test]
    fn signs_the_specifications_example() {
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signer = Signer::new(vec![Zeroizing::new(secret)]);
        let headers = signer.sign(
            &[
                ("Content-Type".into(), "application/json".into()),
                ("Webhook-Signature".into(), "v1,forged".into()),
            ],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            headers,
            [
                ("Content-Type".to_string(), "application/json".to_string()),
                (ID.into(), "msg_p5jXN8AQM9LWM0D4loKWxJek".into()),
                (TIMESTAMP.into(), "1614265330".into()),
                (
                    SIGNATURE.into(),
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()
                ),
            ]
        );
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let signer = Signer::new(vec![
            Zeroizing::new(vec![1; 32]),
            Zeroizing::new(vec![2; 32]),
        ]);
        let headers = signer.sign(&[], "msg_1", 1, b"{}");
        let sigs: Vec<&str> = headers[2].1.split(' ').collect();
        assert_eq!(sigs.len(), 2);
        assert_ne!(sigs[0], sigs[1]);
        assert!(sigs.iter().all(|s| s.starts_with("v1,")));
    }

    #[test]
    fn delivery_ids_differ_by_event_plugin_and_store() {
        let (a, b) = ([7u8; 32], [8u8; 32]);
        let id = delivery_id(&a, "crm", 5);
        assert_eq!(id, delivery_id(&a, "crm", 5), "stable across attempts");
        assert!(id.starts_with("msg_") && id.len() == 4 + 32);
        for other in [
            delivery_id(&a, "crm", 6),
            delivery_id(&a, "crm2", 5),
            delivery_id(&b, "crm", 5),
        ] {
            assert_ne!(id, other);
        }
    }
}
