//! The auditor's verification: the hash chain, the signed checkpoints inside the log, and the
//! checkpoints the auditor holds outside it. One fold over events in position order serves
//! the database and an exported file alike.
//!
//! A break is named by what most likely happened, judged from the event at the break and the
//! one or two after it: a deleted event leaves a gap (or, when the rows after it were
//! renumbered, an event that links to a hash nobody has); an inserted event is linked over by
//! the event after it; a reordered pair links crosswise; a modified event links correctly
//! but does not hash to its stored hash. A truncated tail and a complete rewrite leave a valid
//! chain, and show only against a checkpoint held outside the database.

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::VerifyingKey;
use keyledger_store::chain::{BreakKind, ChainBreak, ChainVerifier, GENESIS_HASH};
use keyledger_store::checkpoint::{Checkpoint, CheckpointError, is_checkpoint};
use keyledger_store::{ChainHead, RecordedEvent};

/// How many recent hashes are kept to check the log's own checkpoints: a checkpoint signs
/// the head it read just before its own append, so only concurrent appends separate them.
const RECENT: usize = 65_536;

#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Keys whose checkpoint signatures are accepted (`--public-key`).
    pub trusted_keys: Vec<VerifyingKey>,
    /// Checkpoints the auditor kept outside the database (`--checkpoint`).
    pub held: Vec<Checkpoint>,
}

/// The first problem found, with the position it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The event links to its predecessor but does not hash to its stored hash.
    Modified { position: u64 },
    /// Positions `first..=last` are missing.
    Deleted { first: u64, last: u64 },
    /// The events at `first` and `first + 1` are in each other's place.
    Reordered { first: u64 },
    /// The event at `position` was inserted: the event after it links over it.
    Inserted { position: u64 },
    /// The event does not link to the event before it, and nothing after it explains why:
    /// an event before it was deleted and the rows renumbered, or it was moved here.
    Unlinked { position: u64 },
    /// The log ends at `log_ends_at` but a held checkpoint signs `checkpoint_position`.
    Truncated {
        log_ends_at: u64,
        checkpoint_position: u64,
    },
    /// A signed checkpoint's hash differs from the log's hash at the position it signs: the log
    /// was rewritten up to there. `carried_at` is the checkpoint event's own position, or
    /// `None` for a checkpoint the auditor holds.
    CheckpointMismatch {
        position: u64,
        carried_at: Option<u64>,
    },
    /// A checkpoint in the log (at `carried_at`) or held by the auditor that does not verify.
    BadCheckpoint {
        carried_at: Option<u64>,
        error: CheckpointError,
    },
}

impl Finding {
    /// The position the auditor should look at.
    pub fn position(&self) -> u64 {
        match self {
            Self::Modified { position }
            | Self::Inserted { position }
            | Self::Unlinked { position } => *position,
            Self::Deleted { first, .. } => *first,
            Self::Reordered { first } => *first,
            Self::Truncated { log_ends_at, .. } => log_ends_at + 1,
            Self::CheckpointMismatch {
                position,
                carried_at,
            } => carried_at.unwrap_or(*position),
            Self::BadCheckpoint { carried_at, .. } => carried_at.unwrap_or(0),
        }
    }

    /// A sentence for the auditor.
    pub fn describe(&self) -> String {
        match self {
            Self::Modified { position } => format!(
                "event {position} was modified (its stored hash does not match its content)"
            ),
            Self::Deleted { first, last } if first == last => {
                format!("event {first} was deleted (position {first} is missing)")
            }
            Self::Deleted { first, last } => {
                format!("events {first} to {last} were deleted (positions missing)")
            }
            Self::Reordered { first } => format!(
                "events {first} and {} were reordered (each links to the other's hash)",
                first + 1
            ),
            Self::Inserted { position } => format!(
                "an event was inserted at position {position} (the event after it links to the \
                 event before it)"
            ),
            Self::Unlinked { position } => format!(
                "event {position} does not link to the event before it (an event before it \
                 was deleted and the rest renumbered, or it was moved here)"
            ),
            Self::Truncated {
                log_ends_at,
                checkpoint_position,
            } => format!(
                "the log was truncated: it ends at position {log_ends_at}, but a signed \
                 checkpoint covers position {checkpoint_position} (events {} to \
                 {checkpoint_position} are missing)",
                log_ends_at + 1
            ),
            Self::CheckpointMismatch {
                position,
                carried_at: Some(at),
            } => format!(
                "the checkpoint at position {at} signs a different hash for position \
                 {position} (the log was rewritten up to there)"
            ),
            Self::CheckpointMismatch {
                position,
                carried_at: None,
            } => format!(
                "the log's hash at position {position} differs from the signed checkpoint \
                 you hold (the log was rewritten up to there)"
            ),
            Self::BadCheckpoint {
                carried_at: Some(at),
                error,
            } => format!("the checkpoint at position {at} does not verify: {error}"),
            Self::BadCheckpoint {
                carried_at: None,
                error,
            } => format!("the checkpoint you hold does not verify: {error}"),
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Events whose hash and link verified.
    pub checked: u64,
    /// The last event that verified.
    pub head: Option<ChainHead>,
    /// Checkpoints in the log whose signature verified and whose hash matched.
    pub checkpoints_verified: u64,
    /// Checkpoints in the log not checked: no `--public-key` was given, or the position they
    /// sign is before the verified range.
    pub checkpoints_unchecked: u64,
    /// The highest position vouched for by a verified checkpoint (in the log or held) that
    /// matched the chain.
    pub covered_to: Option<u64>,
    pub finding: Option<Finding>,
}

/// Checks events one at a time, in position order.
pub struct Auditor {
    verifier: ChainVerifier,
    /// The hash before the last verified event, to recognise an event that links over it.
    before_last: Option<[u8; 32]>,
    recent: VecDeque<(u64, [u8; 32])>,
    /// Held checkpoints not reached yet, by the position they sign.
    held: BTreeMap<u64, Vec<Checkpoint>>,
    trusted: Vec<VerifyingKey>,
    first_position: u64,
    report: AuditReport,
}

impl Auditor {
    /// Starts at genesis. Held checkpoints are verified first.
    pub fn new(options: AuditOptions) -> Result<Self, Finding> {
        Self::starting(options, ChainVerifier::new())
    }

    /// Starts after `position` whose hash is taken as `hash` (a trusted checkpoint, or the
    /// link of an exported range's first event).
    pub fn after(options: AuditOptions, position: u64, hash: [u8; 32]) -> Result<Self, Finding> {
        let mut auditor = Self::starting(options, ChainVerifier::after(position, hash))?;
        auditor.recent.push_back((position, hash));
        Ok(auditor)
    }

    fn starting(options: AuditOptions, verifier: ChainVerifier) -> Result<Self, Finding> {
        let mut held: BTreeMap<u64, Vec<Checkpoint>> = BTreeMap::new();
        for checkpoint in options.held {
            checkpoint
                .verify(&options.trusted_keys)
                .map_err(|error| Finding::BadCheckpoint {
                    carried_at: None,
                    error,
                })?;
            held.entry(checkpoint.position)
                .or_default()
                .push(checkpoint);
        }
        let first_position = verifier.head().map_or(0, |h| h.position);
        let mut auditor = Self {
            before_last: None,
            recent: VecDeque::new(),
            held,
            trusted: options.trusted_keys,
            first_position,
            report: AuditReport {
                checked: 0,
                head: verifier.head(),
                checkpoints_verified: 0,
                checkpoints_unchecked: 0,
                covered_to: None,
                finding: None,
            },
            verifier,
        };
        if first_position == 0 {
            auditor.reach(0, GENESIS_HASH)?;
        } else {
            auditor.reach(first_position, auditor.verifier.prev_hash())?;
        }
        Ok(auditor)
    }

    /// Checks the next event. `following` are the one or two events after it, if any; they
    /// are only read to name a break.
    pub fn check(
        &mut self,
        event: &RecordedEvent,
        following: &[RecordedEvent],
    ) -> Result<(), Finding> {
        let prev = self.verifier.prev_hash();
        if let Err(broken) = self.verifier.check(event) {
            return Err(self.name_break(broken, event, prev, following));
        }
        self.before_last = Some(prev);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((event.position, event.hash));
        self.report.checked = self.verifier.checked();
        self.report.head = self.verifier.head();
        self.reach(event.position, event.hash)?;
        if is_checkpoint(event) {
            self.check_carried(event)?;
        }
        Ok(())
    }

    /// Compares held checkpoints of `position` with the hash the log has there.
    fn reach(&mut self, position: u64, hash: [u8; 32]) -> Result<(), Finding> {
        if let Some(held) = self.held.remove(&position) {
            for checkpoint in held {
                if checkpoint.hash != hash {
                    return Err(Finding::CheckpointMismatch {
                        position,
                        carried_at: None,
                    });
                }
                self.cover(position);
            }
        }
        Ok(())
    }

    fn cover(&mut self, position: u64) {
        self.report.covered_to = Some(self.report.covered_to.map_or(position, |c| c.max(position)));
    }

    /// A `log.checkpoint.signed` event: its signature, and the hash it signs.
    fn check_carried(&mut self, event: &RecordedEvent) -> Result<(), Finding> {
        let bad = |error| Finding::BadCheckpoint {
            carried_at: Some(event.position),
            error,
        };
        let checkpoint = Checkpoint::from_event(event).map_err(bad)?;
        if self.trusted.is_empty() {
            self.report.checkpoints_unchecked += 1;
            return Ok(());
        }
        checkpoint.verify(&self.trusted).map_err(bad)?;
        let known = if checkpoint.position == 0 {
            Some(GENESIS_HASH)
        } else {
            self.recent
                .iter()
                .rev()
                .find(|(p, _)| *p == checkpoint.position)
                .map(|(_, h)| *h)
        };
        match known {
            Some(hash) if hash == checkpoint.hash => {
                self.report.checkpoints_verified += 1;
                self.cover(checkpoint.position);
                Ok(())
            }
            Some(_) => Err(Finding::CheckpointMismatch {
                position: checkpoint.position,
                carried_at: Some(event.position),
            }),
            // A checkpoint signs a head it has seen: one that signs its own position or
            // later was forged.
            None if checkpoint.position >= event.position => Err(Finding::CheckpointMismatch {
                position: checkpoint.position,
                carried_at: Some(event.position),
            }),
            None => {
                self.report.checkpoints_unchecked += 1;
                Ok(())
            }
        }
    }

    fn name_break(
        &self,
        broken: ChainBreak,
        event: &RecordedEvent,
        prev: [u8; 32],
        following: &[RecordedEvent],
    ) -> Finding {
        let position = broken.position;
        if let BreakKind::PositionGap { expected } = broken.kind {
            return Finding::Deleted {
                first: expected,
                last: position.saturating_sub(1).max(expected),
            };
        }
        // The event links over the one before it: that one was inserted.
        if self.before_last == Some(event.prev_hash) && position > self.first_position + 1 {
            return Finding::Inserted {
                position: position - 1,
            };
        }
        if let Some(next) = following.first()
            && next.position == position + 1
            && next.prev_hash == prev
        {
            return if event.prev_hash == next.hash {
                Finding::Reordered { first: position }
            } else {
                Finding::Inserted { position }
            };
        }
        match broken.kind {
            BreakKind::HashMismatch => Finding::Modified { position },
            BreakKind::PrevHashMismatch | BreakKind::PositionGap { .. } => {
                Finding::Unlinked { position }
            }
        }
    }

    /// Ends the walk: a held checkpoint beyond the last event means the tail was cut.
    pub fn finish(mut self, finding: Option<Finding>) -> AuditReport {
        let log_ends_at = self.report.head.map_or(0, |h| h.position);
        self.report.finding = finding.or_else(|| {
            self.held
                .keys()
                .find(|p| **p > log_ends_at)
                .map(|p| Finding::Truncated {
                    log_ends_at,
                    checkpoint_position: *p,
                })
        });
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use ed25519_dalek::SigningKey;
    use keyledger_store::StreamId;
    use keyledger_store::chain::event_hash;
    use uuid::Uuid;

    fn chain(n: u64) -> Vec<RecordedEvent> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|p| {
                let mut e = RecordedEvent {
                    position: p,
                    event_id: Uuid::from_u128(u128::from(p)),
                    tenant_id: Uuid::nil(),
                    stream: StreamId::new("user", "u1"),
                    stream_version: p,
                    event_type: "user.login.failed".into(),
                    schema_version: 1,
                    recorded_at: DateTime::from_timestamp_micros(1_700_000_000_000_000)
                        .unwrap_or_default(),
                    payload: format!(r#"{{"n":{p}}}"#),
                    metadata: "{}".into(),
                    prev_hash: prev,
                    hash: GENESIS_HASH,
                };
                e.hash = event_hash(&prev, &e);
                prev = e.hash;
                e
            })
            .collect()
    }

    /// Rehashes from `from` on, as a forger who knows the layout would.
    fn rechain(events: &mut [RecordedEvent], from: usize) {
        for i in from..events.len() {
            let prev = if i == 0 {
                GENESIS_HASH
            } else {
                events[i - 1].hash
            };
            events[i].prev_hash = prev;
            events[i].hash = event_hash(&prev, &events[i]);
        }
    }

    fn audit(events: &[RecordedEvent], options: AuditOptions) -> AuditReport {
        let mut auditor = match Auditor::new(options) {
            Ok(a) => a,
            Err(f) => panic!("{f:?}"),
        };
        for (i, e) in events.iter().enumerate() {
            let following = &events[i + 1..(i + 3).min(events.len())];
            if let Err(finding) = auditor.check(e, following) {
                return auditor.finish(Some(finding));
            }
        }
        auditor.finish(None)
    }

    fn finding(events: &[RecordedEvent]) -> Option<Finding> {
        audit(events, AuditOptions::default()).finding
    }

    #[test]
    fn each_kind_of_tampering_is_named_with_its_position() {
        let mut modified = chain(6);
        modified[2].payload = r#"{"n":99}"#.into();
        assert_eq!(finding(&modified), Some(Finding::Modified { position: 3 }));

        let mut deleted = chain(6);
        deleted.remove(2);
        assert_eq!(
            finding(&deleted),
            Some(Finding::Deleted { first: 3, last: 3 })
        );

        let mut reordered = chain(6);
        reordered.swap(2, 3);
        reordered[2].position = 3;
        reordered[3].position = 4;
        assert_eq!(finding(&reordered), Some(Finding::Reordered { first: 3 }));

        // Inserted with a forged but self-consistent hash: named by the event after it.
        let mut inserted = chain(6);
        let mut forged = inserted[2].clone();
        forged.payload = r#"{"forged":true}"#.into();
        inserted.insert(2, forged);
        for (i, e) in inserted.iter_mut().enumerate() {
            e.position = i as u64 + 1;
        }
        inserted[2].hash = event_hash(&inserted[1].hash, &inserted[2]);
        assert_eq!(finding(&inserted), Some(Finding::Inserted { position: 3 }));

        // Inserted with a hash the forger did not compute.
        let mut inserted = chain(6);
        let mut forged = inserted[2].clone();
        forged.payload = r#"{"forged":true}"#.into();
        inserted.insert(2, forged);
        for (i, e) in inserted.iter_mut().enumerate() {
            e.position = i as u64 + 1;
        }
        assert_eq!(finding(&inserted), Some(Finding::Inserted { position: 3 }));

        // Deleted, then the rows after it renumbered.
        let mut renumbered = chain(6);
        renumbered.remove(2);
        for (i, e) in renumbered.iter_mut().enumerate() {
            e.position = i as u64 + 1;
        }
        assert_eq!(
            finding(&renumbered),
            Some(Finding::Unlinked { position: 3 })
        );
    }

    #[test]
    fn a_truncated_tail_and_a_rewrite_show_only_against_a_held_checkpoint() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let events = chain(6);
        let held = Checkpoint::sign(&key, 5, events[4].hash, chrono::Utc::now());
        let options = AuditOptions {
            trusted_keys: vec![key.verifying_key()],
            held: vec![held],
        };
        assert_eq!(finding(&events[..3]), None);
        assert_eq!(
            audit(&events[..3], options.clone()).finding,
            Some(Finding::Truncated {
                log_ends_at: 3,
                checkpoint_position: 5
            })
        );
        let intact = audit(&events, options.clone());
        assert_eq!(intact.finding, None);
        assert_eq!(intact.covered_to, Some(5));

        let mut rewritten = events.clone();
        rewritten[1].payload = r#"{"n":"rewritten"}"#.into();
        rechain(&mut rewritten, 1);
        assert_eq!(finding(&rewritten), None);
        assert_eq!(
            audit(&rewritten, options).finding,
            Some(Finding::CheckpointMismatch {
                position: 5,
                carried_at: None
            })
        );
    }

    #[test]
    fn a_held_checkpoint_signed_by_another_key_is_refused() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let other = SigningKey::from_bytes(&[5; 32]);
        let held = Checkpoint::sign(&other, 0, GENESIS_HASH, chrono::Utc::now());
        let result = Auditor::new(AuditOptions {
            trusted_keys: vec![key.verifying_key()],
            held: vec![held],
        });
        assert!(matches!(
            result,
            Err(Finding::BadCheckpoint {
                carried_at: None,
                error: CheckpointError::UntrustedKey(_)
            })
        ));
    }
}
