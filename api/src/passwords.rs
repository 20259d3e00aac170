//! Password hashing: argon2id, PHC strings, 16-byte salts, off the async executor with a bound
//! on how many hashes run at once (each costs ~19 MiB and a core for tens of milliseconds).
//!
//! The bound is a fixed set of hashing threads fed from one queue, not `spawn_blocking` behind
//! a semaphore. With the semaphore, every hash ended with two wake-ups before the next could
//! start, even with logins waiting: the finished hash woke its task to release the permit, and
//! the next task woke a blocking thread. On this VM a wake-up onto an idle core is slow, and
//! under full login load the cores sat ~4 % idle in those gaps. A hashing thread that finishes
//! takes the next queued job at once.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use keyledger_domain::password::HashParams;
use tokio::sync::oneshot;

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

/// Work for a hashing thread, given that thread's working memory.
type Job = Box<dyn FnOnce(&mut WorkingMemory) + Send>;

#[derive(Clone)]
pub struct PasswordHasher {
    config: Argon2Config,
    /// The hashing threads' queue; they stop once every clone of the hasher is gone.
    jobs: mpsc::Sender<Job>,
    /// Verified against when the user is unknown, so that an unknown user costs the same time.
    dummy_hash: Arc<String>,
    /// The argon2 work done, counted where it is done (for `/metrics`, and for tests that an
    /// unknown user costs a verification too).
    work: Arc<HashingWork>,
}

/// Counts of argon2 operations run by a [`PasswordHasher`].
#[derive(Debug, Default)]
struct HashingWork {
    verifications: AtomicU64,
    hashes: AtomicU64,
}

impl PasswordHasher {
    /// A hasher with `concurrency` hashing threads (at least one).
    pub fn new(config: Argon2Config, concurrency: usize) -> Result<Self, HashingError> {
        let dummy = hash_now(&config, &crate::tokens::generate())?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..concurrency.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("password-hasher-{n}"))
                .spawn(move || hash_jobs(&queue))
                .map_err(|e| HashingError::Hash(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self {
            config,
            jobs,
            dummy_hash: Arc::new(dummy),
            work: Arc::default(),
        })
    }

    /// argon2 verifications run so far, those against the dummy hash included.
    pub fn verifications(&self) -> u64 {
        self.work.verifications.load(Ordering::Relaxed)
    }

    /// argon2 hashes of new passwords computed so far.
    pub fn hashes(&self) -> u64 {
        self.work.hashes.load(Ordering::Relaxed)
    }

    pub fn params(&self) -> HashParams {
        self.config.hash_params()
    }

    /// Hashes an already-normalised password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashingError> {
        let config = self.config;
        let work = Arc::clone(&self.work);
        self.run(move |_| {
            let hashed = hash_now(&config, &password);
            work.hashes.fetch_add(1, Ordering::Relaxed);
            hashed
        })
        .await?
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
        let work = Arc::clone(&self.work);
        let verified = self
            .run(move |memory| {
                let parsed =
                    PasswordHash::new(&phc).map_err(|e| HashingError::Hash(e.to_string()))?;
                let matches = memory.verify(password.as_bytes(), &parsed);
                work.verifications.fetch_add(1, Ordering::Relaxed);
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

    /// Queues `work` for the next free hashing thread and waits for its answer.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut WorkingMemory) -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Box::new(move |memory| {
                // The caller may have stopped waiting; the work is done either way.
                let _ = answer.send(work(memory));
            }))
            .map_err(|_| HashingError::PoolClosed)?;
        answered.await.map_err(|_| HashingError::PoolClosed)
    }
}

/// A hashing thread: takes the next job as soon as it is free, until every sender is gone.
fn hash_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = WorkingMemory::default();
    loop {
        // Only the waiting thread holds the lock; it lets go as soon as it has a job.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        // A panicking hash drops its answer (its caller sees `PoolClosed`); the thread lives
        // on, so the bound never shrinks.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            tracing::error!("a password hash panicked");
            memory = WorkingMemory::default();
        }
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

/// A hashing thread's argon2 working memory (m KiB a hash), kept for its next verification:
/// allocating and zeroing 19 MiB for every login costs about a tenth of the hash itself.
/// argon2 writes every block before it reads it, so what a previous hash left there does not
/// matter.
#[derive(Default)]
struct WorkingMemory {
    blocks: Vec<Block>,
}

impl WorkingMemory {
    /// Whether `password` hashes to `hash`'s output with `hash`'s own algorithm, version,
    /// parameters and salt; the outputs are compared in constant time.
    fn verify(&mut self, password: &[u8], hash: &PasswordHash<'_>) -> bool {
        let mut computed = || -> Result<bool, password_hash::Error> {
            let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
                return Ok(false);
            };
            let params = Params::try_from(hash)?;
            let version = hash
                .version
                .map(Version::try_from)
                .transpose()?
                .unwrap_or_default();
            let argon2 = Argon2::new(Algorithm::try_from(hash.algorithm)?, version, params);
            let mut salt_buffer = [0u8; 64];
            let salt = salt.decode_b64(&mut salt_buffer)?;
            let blocks = argon2.params().block_count();
            if self.blocks.len() < blocks {
                self.blocks = vec![Block::default(); blocks];
            }
            let memory = &mut self.blocks[..blocks];
            let output = Output::init_with(expected.len(), |out| {
                Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut *memory)?)
            });
            // `Output`'s equality is constant-time.
            Ok(output? == expected)
        };
        computed().unwrap_or(false)
    }
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

    /// Verification reuses its working memory: what one hash leaves there must not change the
    /// next answer, whatever the stored hash's variant, version or size.
    #[tokio::test]
    async fn verifications_in_a_row_answer_each_on_its_own() {
        let hasher = PasswordHasher::new(cheap(), 1).unwrap();
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        let stored = |algorithm, version, m_cost_kib| {
            Argon2::new(
                algorithm,
                version,
                Params::new(m_cost_kib, 1, 1, None).unwrap(),
            )
            .hash_password(b"a long enough password", &salt)
            .unwrap()
            .to_string()
        };
        let hashes = [
            stored(Algorithm::Argon2id, Version::V0x13, 2048),
            stored(Algorithm::Argon2i, Version::V0x13, 1024),
            stored(Algorithm::Argon2d, Version::V0x10, 1536),
            stored(Algorithm::Argon2id, Version::V0x13, 1024),
        ];
        for phc in hashes {
            for (password, matches) in [
                ("a long enough password", true),
                ("a long enough passwore", false),
                ("a long enough password", true),
            ] {
                let verified = hasher
                    .verify(password.into(), Some(phc.clone()))
                    .await
                    .unwrap();
                assert_eq!(verified.matches, matches, "{phc} with {password:?}");
            }
        }
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

    /// Hashes run on the hashing threads, never on the executor's, and never more at once
    /// than the configured bound, however many are asked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_bound_of_hashes_run_at_once_off_the_executor() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hasher = PasswordHasher::new(cheap(), 2).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..8).map(|_| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            hasher.run(move |_| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
                std::thread::current().name().map(str::to_owned)
            })
        });
        let threads = futures_util::future::join_all(jobs).await;
        assert_eq!(most.load(Ordering::SeqCst), 2);
        for thread in threads {
            let name = thread.unwrap().unwrap();
            assert!(name.starts_with("password-hasher-"), "{name}");
        }
    }

    #[tokio::test]
    async fn without_a_stored_hash_nothing_matches_after_the_same_work() {
        let hasher = PasswordHasher::new(cheap(), 1).unwrap();
        let verified = hasher.verify(String::new(), None).await.unwrap();
        assert!(!verified.matches);
        // The dummy hash is really verified against: an unknown user costs what a known one
        // does.
        assert_eq!((hasher.verifications(), hasher.hashes()), (1, 0));
        let stored = hasher.hash("a password".into()).await.unwrap();
        hasher
            .verify("a password".into(), Some(stored))
            .await
            .unwrap();
        assert_eq!((hasher.verifications(), hasher.hashes()), (2, 1));
    }
}
