//! The server's checkpoint signing key: kept in a file beside the data (never in the log, a
//! log line or an answer), announced in the log when it changes, and used to sign the chain
//! head on demand and at an interval.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_store::chain::GENESIS_HASH;
use keyledger_store::checkpoint::{
    CHECKPOINT_SIGNED, Checkpoint, SIGNING_KEY_ROTATED, checkpoint_stream, public_key_hex,
    signing_key_stream,
};
use keyledger_store::{
    AppendError, AppendRequest, Appended, EventLog, EventMetadata, ExpectedVersion, NewEvent,
};
use rand::RngCore;
use rand::rngs::OsRng;
use uuid::Uuid;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read or write the signing key file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key file {0} does not hold 64 hex digits")]
    Malformed(String),
}

/// A fresh key from the operating system's CSPRNG.
pub fn generate() -> SigningKey {
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(seed.as_mut());
    SigningKey::from_bytes(&seed)
}

/// Reads the key at `path`, or creates it there (mode 0600) on first start. Returns whether
/// it was created now.
pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), SigningKeyError> {
    let io = |source| SigningKeyError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return parse(path, &Zeroizing::new(text)).map(|key| (key, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let key = generate();
    // Written whole under a temporary name, then linked into place: a process that starts at
    // the same moment either finds no file or a complete one, never a half-written one.
    let tmp = path.with_extension(format!("tmp-{}", Uuid::now_v7().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        let text = Zeroizing::new(hex::encode(key.to_bytes()));
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((key, true)),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
            parse(path, &text).map(|key| (key, false))
        }
        Err(e) => Err(io(e)),
    }
}

fn parse(path: &Path, text: &str) -> Result<SigningKey, SigningKeyError> {
    parse_key(text).map_err(|_| SigningKeyError::Malformed(path.display().to_string()))
}

/// A signing key file's text: the 32-byte seed as 64 hex digits.
pub fn parse_key(text: &str) -> Result<SigningKey, SigningKeyError> {
    let malformed = || SigningKeyError::Malformed("the key".into());
    let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| malformed())?);
    let seed: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
    Ok(SigningKey::from_bytes(seed))
}

/// Records `log.signing_key.rotated` when the log does not yet name this key as the signer.
pub async fn announce_key(
    log: &EventLog,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> Result<(), AppendError> {
    let stream = signing_key_stream();
    let public_key = public_key_hex(&key.verifying_key());
    let last = log.last_in_stream(&stream).await?;
    let previous = match &last {
        Some(event) => event
            .payload_json()
            .ok()
            .and_then(|p| p["public_key"].as_str().map(str::to_owned)),
        None => None,
    };
    if previous.as_deref() == Some(public_key.as_str()) {
        return Ok(());
    }
    let expected = last.map_or(ExpectedVersion::NoStream, |e| {
        ExpectedVersion::Exact(e.stream_version)
    });
    let event = system_event(
        SIGNING_KEY_ROTATED,
        now,
        serde_json::json!({ "public_key": public_key, "previous_public_key": previous, "at": now }),
    );
    match log
        .append(AppendRequest {
            stream,
            expected,
            events: vec![event],
            claims: Vec::new(),
            secrets: Vec::new(),
            sessions: Vec::new(),
            decided_on: Vec::new(),
        })
        .await
    {
        // Another node announced its key at the same moment; ours is announced at its next
        // start. Checkpoints carry their public key either way.
        Ok(_) | Err(AppendError::WrongExpectedVersion { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Signs the current head and appends the checkpoint to the log.
pub async fn sign_checkpoint(
    log: &EventLog,
    key: &SigningKey,
    metadata: EventMetadata,
    now: DateTime<Utc>,
) -> Result<(Checkpoint, Appended), AppendError> {
    let (position, hash) = log
        .head()
        .await?
        .map_or((0, GENESIS_HASH), |h| (h.position, h.hash));
    let checkpoint = Checkpoint::sign(key, position, hash, now);
    let payload = serde_json::to_value(checkpoint.to_json())
        .map_err(|e| keyledger_store::StoreError::Corrupt(e.to_string()))?;
    let mut event = system_event(CHECKPOINT_SIGNED, now, payload);
    event.metadata = metadata;
    let appended = log
        .append(AppendRequest {
            stream: checkpoint_stream(),
            expected: ExpectedVersion::Any,
            events: vec![event],
            claims: Vec::new(),
            secrets: Vec::new(),
            sessions: Vec::new(),
            decided_on: Vec::new(),
        })
        .await?;
    Ok((checkpoint, appended))
}

fn system_event(event_type: &str, now: DateTime<Utc>, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        tenant_id: DEFAULT_TENANT_ID,
        event_type: event_type.into(),
        schema_version: 1,
        recorded_at: now,
        payload,
        metadata: EventMetadata::system(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_then_read_back() {
        let dir = std::env::temp_dir().join(format!("keyledger-key-{}", Uuid::now_v7()));
        let path = dir.join("signing.key");
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.to_bytes(), again.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(SigningKeyError::Malformed(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
