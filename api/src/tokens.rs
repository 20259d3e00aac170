//! Opaque bearer tokens: 256 random bits, stored and compared only as SHA-256 hashes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A new token from the operating system's CSPRNG.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The admin token, known only by its hash.
#[derive(Clone)]
pub struct AdminToken {
    hash: [u8; 32],
}

impl AdminToken {
    pub fn from_hash(hash: [u8; 32]) -> Self {
        Self { hash }
    }

    pub fn matches(&self, presented: &str) -> bool {
        hash(presented).ct_eq(&self.hash).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_256_bits_and_differ() {
        let a = generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, generate());
    }

    #[test]
    fn the_admin_token_matches_only_itself() {
        let token = generate();
        let admin = AdminToken::from_hash(hash(&token));
        assert!(admin.matches(&token));
        assert!(!admin.matches(&generate()));
    }
}
