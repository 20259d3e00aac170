//! Password hashing: argon2id, PHC strings, 16-byte salts, off the async executor with a bound
//! on how many hashes run at once (each costs ~19 MiB and a core for tens of milliseconds).

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use keyledger_domain::password::HashParams;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("the hashing pool is gone")]
    PoolClosed,
}

/// OWASP's argon2id row: m = 19456 KiB, t = 2, p = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Config {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self {
            m_cost_kib: 19_456,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

impl Argon2Config {
    pub fn hash_params(&self) -> HashParams {
        HashParams {
            algorithm: "argon2id".into(),
            m_cost_kib: self.m_cost_kib,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>, HashingError> {
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map_err(|e| HashingError::Params(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash used other parameters than the configured ones.
    pub outdated: bool,
}

#[derive(Clone)]
pub struct PasswordHasher {
    config: Argon2Config,
    permits: Arc<Semaphore>,
    /// Verified against when the user is unknown, so that an unknown user costs the same time.
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    pub fn new(config: Argon2Config, concurrency: usize) -> Result<Self, HashingError> {
        let dummy = hash_now(&config, &crate::tokens::generate())?;
        Ok(Self {
            config,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: Arc::new(dummy),
        })
    }

    pub fn params(&self) -> HashParams {
        self.config.hash_params()
    }

    /// Hashes an already-normalised password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashingError> {
        let config = self.config;
        self.run(move || hash_now(&config, &password)).await?
    }

    /// Verifies against `stored`, or against the dummy hash when there is none (the answer is
    /// then always "no match", after the same work).
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verified, HashingError> {
        let config = self.config;
        let has_stored = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let verified = self
            .run(move || {
                let parsed =
                    PasswordHash::new(&phc).map_err(|e| HashingError::Hash(e.to_string()))?;
                let matches = Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok();
                Ok::<_, HashingError>(Verified {
                    matches,
                    outdated: is_outdated(&parsed, &config),
                })
            })
            .await??;
        Ok(Verified {
            matches: verified.matches && has_stored,
            outdated: verified.outdated,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashingError::PoolClosed)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| HashingError::PoolClosed)
    }
}

fn hash_now(config: &Argon2Config, password: &str) -> Result<String, HashingError> {
    let salt = SaltString::generate(&mut OsRng);
    config
        .argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashingError::Hash(e.to_string()))
}

fn is_outdated(hash: &PasswordHash<'_>, config: &Argon2Config) -> bool {
    let param = |name: &str| hash.params.get_decimal(name).unwrap_or(0);
    hash.algorithm.as_str() != "argon2id"
        || param("m") != config.m_cost_kib
        || param("t") != config.t_cost
        || param("p") != config.p_cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Config {
        Argon2Config {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        }
    }

    #[tokio::test]
    async fn a_hash_is_an_argon2id_phc_string_with_a_16_byte_salt_and_verifies() {
        let hasher = PasswordHasher::new(Argon2Config::default(), 2).unwrap();
        let phc = hasher
            .hash("correct horse battery staple".into())
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        let mut salt = [0u8; 64];
        assert_eq!(
            parsed.salt.unwrap().decode_b64(&mut salt).unwrap().len(),
            16
        );
        let ok = hasher
            .verify("correct horse battery staple".into(), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verified {
                matches: true,
                outdated: false
            }
        );
        let wrong = hasher
            .verify("correct horse battery stapl".into(), Some(phc))
            .await
            .unwrap();
        assert!(!wrong.matches);
    }

    #[tokio::test]
    async fn a_hash_made_with_older_parameters_is_outdated() {
        let old = PasswordHasher::new(cheap(), 1).unwrap();
        let phc = old.hash("a long enough password".into()).await.unwrap();
        let current = PasswordHasher::new(
            Argon2Config {
                m_cost_kib: 2048,
                ..cheap()
            },
            1,
        )
        .unwrap();
        let verified = current
            .verify("a long enough password".into(), Some(phc))
            .await
            .unwrap();
        assert_eq!(
            verified,
            Verified {
                matches: true,
                outdated: true
            }
        );
    }

    #[tokio::test]
    async fn without_a_stored_hash_nothing_matches() {
        let hasher = PasswordHasher::new(cheap(), 1).unwrap();
        let verified = hasher.verify(String::new(), None).await.unwrap();
        assert!(!verified.matches);
    }
}
