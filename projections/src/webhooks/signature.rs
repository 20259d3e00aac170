//! Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")),
//! with secrets shown as `whsec_` + base64 of 32 random bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// The spec asks for 24 to 64 bytes; 32 matches the hash.
const SECRET_BYTES: usize = 32;

/// A signing secret. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a signing secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct MalformedSecret;

impl SigningSecret {
    pub fn generate() -> Self {
        let mut key = vec![0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    pub fn parse(shown: &str) -> Result<Self, MalformedSecret> {
        let encoded = shown.strip_prefix(PREFIX).ok_or(MalformedSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| MalformedSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(MalformedSecret);
        }
        Ok(Self(key))
    }

    /// The form shown to the subscriber once, and kept beside the log.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// One `v1,<base64>` signature over the message id, the attempt's timestamp and the exact
    /// body bytes sent.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC zero-pads a key shorter than the hash's 64-byte block (RFC 2104), and our keys
        // are at most 64 bytes, so padding here gives the same MAC with no failure path.
        let mut block = [0u8; 64];
        block[..self.0.len()].copy_from_slice(&self.0);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per valid secret, space-separated, so a
/// receiver that still holds the previous secret keeps verifying during a rotation.
pub fn signature_header(
    secrets: &[SigningSecret],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known-answer vector of the Standard Webhooks reference libraries.
    #[test]
    fn signs_the_reference_vector() {
        let secret = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            secret.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1_649_367_553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn the_signature_covers_id_timestamp_and_every_body_byte() {
        let secret = SigningSecret::generate();
        let base = secret.sign("id1", 10, b"{\"a\":1}");
        assert_ne!(secret.sign("id2", 10, b"{\"a\":1}"), base);
        assert_ne!(secret.sign("id1", 11, b"{\"a\":1}"), base);
        assert_ne!(secret.sign("id1", 10, b"{\"a\": 1}"), base);
    }

    #[test]
    fn generated_secrets_round_trip_and_never_show_in_debug() {
        let secret = SigningSecret::generate();
        let shown = secret.reveal();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&shown).unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "SigningSecret(..)");
        assert_ne!(SigningSecret::generate(), secret);
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for bad in [
            "",
            "whsec_",
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_!!!",
            "whsec_AAAA",
        ] {
            assert!(SigningSecret::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_rotation_header_carries_one_signature_per_secret() {
        let old = SigningSecret::generate();
        let new = SigningSecret::generate();
        let header = signature_header(&[new.clone(), old.clone()], "id", 5, b"{}");
        assert_eq!(
            header,
            format!("{} {}", new.sign("id", 5, b"{}"), old.sign("id", 5, b"{}"))
        );
    }
}
