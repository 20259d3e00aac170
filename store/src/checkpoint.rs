//! Signed checkpoints: the server's Ed25519 signature over the chain head.
//!
//! The hash chain reveals an edit in the middle of the log, but not a truncated tail or a
//! complete rewrite by whoever holds the write path. A checkpoint kept outside the database
//! does: the log must still reach its position with its hash. Checkpoints are events too
//! (stream `system/checkpoints`, type `log.checkpoint.signed`), so a silent gap in the
//! interval signing is itself visible in the log.
//!
//! The signed bytes are a contract with auditors' tools (see `docs/log-format.md`):
//!
//! ```text
//! "keyledger-checkpoint-v1" || 0x00 || position (u64 BE) || hash (32 bytes) || signed_at (i64 BE µs)
//! ```

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::model::{RecordedEvent, StreamId};

/// The stream that holds the checkpoints.
pub const CHECKPOINT_STREAM: (&str, &str) = ("system", "checkpoints");
/// The stream that records which key signs.
pub const SIGNING_KEY_STREAM: (&str, &str) = ("system", "signing_key");
pub const CHECKPOINT_SIGNED: &str = "log.checkpoint.signed";
pub const SIGNING_KEY_ROTATED: &str = "log.signing_key.rotated";

/// Domain separation: these bytes can never be mistaken for another message signed with the
/// same key.
const CONTEXT: &[u8] = b"keyledger-checkpoint-v1\0";

pub fn checkpoint_stream() -> StreamId {
    StreamId::new(CHECKPOINT_STREAM.0, CHECKPOINT_STREAM.1)
}

pub fn signing_key_stream() -> StreamId {
    StreamId::new(SIGNING_KEY_STREAM.0, SIGNING_KEY_STREAM.1)
}

/// A signed statement "the log had `hash` at `position` at `signed_at`". Position 0 with the
/// genesis hash signs an empty log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: u64,
    pub hash: [u8; 32],
    /// Microsecond precision, as signed.
    pub signed_at: DateTime<Utc>,
    pub public_key: VerifyingKey,
    pub signature: Signature,
}

/// The JSON shape of a checkpoint: in the event payload, over the API and in files auditors
/// keep. Bytes are lower-case hex. Unknown fields are ignored, so an API answer saved to a
/// file is a checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointJson {
    pub position: u64,
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    pub public_key: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("the checkpoint is signed by a key that is not trusted ({0})")]
    UntrustedKey(String),
    #[error("the checkpoint's signature does not verify")]
    BadSignature,
}

/// The bytes an Ed25519 signature of a checkpoint covers.
pub fn signed_bytes(position: u64, hash: &[u8; 32], signed_at: DateTime<Utc>) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTEXT.len() + 8 + 32 + 8);
    out.extend_from_slice(CONTEXT);
    out.extend_from_slice(&position.to_be_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(&signed_at.timestamp_micros().to_be_bytes());
    out
}

impl Checkpoint {
    pub fn sign(key: &SigningKey, position: u64, hash: [u8; 32], at: DateTime<Utc>) -> Self {
        // Signed and stored at the precision the JSON and the log keep.
        let signed_at = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
        let signature = key.sign(&signed_bytes(position, &hash, signed_at));
        Self {
            position,
            hash,
            signed_at,
            public_key: key.verifying_key(),
            signature,
        }
    }

    /// Checks the signature, and that the signer is one of `trusted`.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<(), CheckpointError> {
        if !trusted.contains(&self.public_key) {
            return Err(CheckpointError::UntrustedKey(public_key_hex(
                &self.public_key,
            )));
        }
        self.public_key
            .verify(
                &signed_bytes(self.position, &self.hash, self.signed_at),
                &self.signature,
            )
            .map_err(|_| CheckpointError::BadSignature)
    }

    pub fn to_json(&self) -> CheckpointJson {
        CheckpointJson {
            position: self.position,
            hash: hex::encode(self.hash),
            signed_at: self.signed_at,
            public_key: public_key_hex(&self.public_key),
            signature: hex::encode(self.signature.to_bytes()),
        }
    }

    pub fn from_json(json: &CheckpointJson) -> Result<Self, CheckpointError> {
        let signature: [u8; 64] = decode_hex(&json.signature, "signature")?;
        Ok(Self {
            position: json.position,
            hash: decode_hex(&json.hash, "hash")?,
            signed_at: json.signed_at,
            public_key: parse_public_key(&json.public_key)?,
            signature: Signature::from_bytes(&signature),
        })
    }

    /// A checkpoint as JSON text (a file an auditor keeps, or an API answer).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let json: CheckpointJson = serde_json::from_str(text.trim())
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        Self::from_json(&json)
    }

    /// The checkpoint a `log.checkpoint.signed` event carries.
    pub fn from_event(event: &RecordedEvent) -> Result<Self, CheckpointError> {
        let json: CheckpointJson = serde_json::from_str(&event.payload)
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        Self::from_json(&json)
    }
}

/// Whether an event is a checkpoint the server signed.
pub fn is_checkpoint(event: &RecordedEvent) -> bool {
    event.event_type == CHECKPOINT_SIGNED
        && event.stream.kind == CHECKPOINT_STREAM.0
        && event.stream.id == CHECKPOINT_STREAM.1
}

pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// A public key as 64 hex digits (what `keyledger replay public-key` prints).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, CheckpointError> {
    let bytes: [u8; 32] = decode_hex(text.trim(), "public key")?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| CheckpointError::Malformed("the public key is not a curve point".into()))
}

fn decode_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], CheckpointError> {
    let bytes =
        hex::decode(text).map_err(|_| CheckpointError::Malformed(format!("{what} is not hex")))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| CheckpointError::Malformed(format!("{what} is not {N} bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap()
    }

    #[test]
    fn a_signed_checkpoint_verifies_against_its_key_only() {
        let checkpoint = Checkpoint::sign(&key(1), 42, [7; 32], at());
        assert_eq!(checkpoint.verify(&[key(1).verifying_key()]), Ok(()));
        assert!(matches!(
            checkpoint.verify(&[key(2).verifying_key()]),
            Err(CheckpointError::UntrustedKey(_))
        ));
    }

    #[test]
    fn every_signed_field_is_covered_by_the_signature() {
        let trusted = [key(1).verifying_key()];
        let good = Checkpoint::sign(&key(1), 42, [7; 32], at());
        let mut moved = good.clone();
        moved.position = 43;
        let mut rehashed = good.clone();
        rehashed.hash[0] ^= 1;
        let mut redated = good.clone();
        redated.signed_at += chrono::Duration::microseconds(1);
        for bad in [moved, rehashed, redated] {
            assert_eq!(bad.verify(&trusted), Err(CheckpointError::BadSignature));
        }
    }

    #[test]
    fn a_checkpoint_survives_its_json_form() {
        let checkpoint = Checkpoint::sign(&key(3), 9, [5; 32], at());
        let text = serde_json::to_string(&checkpoint.to_json()).unwrap();
        let back = Checkpoint::parse(&text).unwrap();
        assert_eq!(back, checkpoint);
        assert_eq!(back.verify(&[key(3).verifying_key()]), Ok(()));
        assert_eq!(back.signed_at.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn the_signed_bytes_follow_the_documented_layout() {
        let bytes = signed_bytes(1, &[0xab; 32], at());
        assert_eq!(&bytes[..24], b"keyledger-checkpoint-v1\0");
        assert_eq!(&bytes[24..32], &1u64.to_be_bytes());
        assert_eq!(&bytes[32..64], &[0xab; 32]);
        assert_eq!(&bytes[64..], &1_700_000_000_123_456i64.to_be_bytes());
    }

    #[test]
    fn malformed_keys_and_checkpoints_are_refused() {
        assert!(parse_public_key("zz").is_err());
        assert!(parse_public_key(&"00".repeat(31)).is_err());
        assert!(Checkpoint::parse("{}").is_err());
    }
}
