//! The MFA view: one row per user who ever had a second-factor event, with the columns the
//! users list shows and filters on ("MFA: WebAuthn", "MFA: User Requirement").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use keyledger_domain::mfa::{CredentialKind, MfaRequirement};
use keyledger_domain::user::UserEvent;
use keyledger_store::{Database, EventClass, EventFilter, RecordedEvent};
use sqlx::{AnyConnection, Row, any::AnyRow};
use uuid::Uuid;

use super::{decode, from_micros, micros, placeholders};
use crate::error::ProjectionError;
use crate::runner::Projection;

pub const NAME: &str = "mfa";

/// The events that can change a user's MFA row.
const FOLDS: EventClass = EventClass {
    stream_kind: "user",
    type_prefixes: &[
        "user.webauthn.",
        "user.totp.",
        "user.mfa_requirement.changed",
    ],
};

pub struct MfaView;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MfaRow {
    pub user_id: Uuid,
    pub security_keys: u32,
    pub device_authenticators: u32,
    pub legacy_keys: u32,
    pub totp: bool,
    /// The user's own requirement (`required` / `optional`); `None` follows the tenant.
    pub requirement: Option<String>,
    pub last_mfa_at: Option<DateTime<Utc>>,
}

impl MfaRow {
    pub fn webauthn_count(&self) -> u32 {
        self.security_keys
            .saturating_add(self.device_authenticators)
            .saturating_add(self.legacy_keys)
    }
}

const COLUMNS: &str =
    "user_id, security_keys, device_authenticators, legacy_keys, totp, requirement, last_mfa_at";

fn requirement_text(requirement: MfaRequirement) -> &'static str {
    match requirement {
        MfaRequirement::Required => "required",
        MfaRequirement::Optional => "optional",
    }
}

/// Folds one user event into the user's MFA row. Pure.
pub fn fold(row: &mut MfaRow, event: &UserEvent) {
    match event {
        UserEvent::WebauthnRegistered(e) => {
            let count = count_of(row, e.credential.kind);
            *count = count.saturating_add(1);
        }
        UserEvent::WebauthnRemoved(e) => {
            let count = count_of(row, e.kind);
            *count = count.saturating_sub(1);
        }
        UserEvent::WebauthnUsed(e) => row.last_mfa_at = Some(e.at),
        UserEvent::TotpUsed(e) => row.last_mfa_at = Some(e.at),
        UserEvent::TotpAdded(_) => row.totp = true,
        UserEvent::TotpRemoved(_) => row.totp = false,
        UserEvent::MfaRequirementChanged(e) => {
            row.requirement = e.requirement.map(|r| requirement_text(r).to_owned());
        }
        _ => {}
    }
}

fn count_of(row: &mut MfaRow, kind: CredentialKind) -> &mut u32 {
    match kind {
        CredentialKind::SecurityKey => &mut row.security_keys,
        CredentialKind::DeviceAuthenticator => &mut row.device_authenticators,
        CredentialKind::Legacy => &mut row.legacy_keys,
    }
}

/// Whether the event changes a user's MFA row (a user has no row before the first such event).
pub fn concerns_mfa(event: &UserEvent) -> bool {
    matches!(
        event,
        UserEvent::WebauthnRegistered(_)
            | UserEvent::WebauthnRemoved(_)
            | UserEvent::WebauthnUsed(_)
            | UserEvent::TotpAdded(_)
            | UserEvent::TotpRemoved(_)
            | UserEvent::TotpUsed(_)
            | UserEvent::MfaRequirementChanged(_)
    )
}

impl MfaView {
    /// The rows of `user_ids` that exist.
    pub async fn get_many(
        db: &Database,
        user_ids: &[Uuid],
    ) -> Result<BTreeMap<Uuid, MfaRow>, ProjectionError> {
        let mut conn = db.pool().acquire().await?;
        let ids: Vec<String> = user_ids.iter().map(Uuid::to_string).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ok(load(&mut conn, &refs)
            .await?
            .into_values()
            .map(|r| (r.user_id, r))
            .collect())
    }

    /// SQL for `users_view.user_id` filtered by the MFA columns (`None`: no condition), with
    /// its parameters: WebAuthn enrolled or not, and the user's own requirement (`default`
    /// for users who follow the tenant).
    pub fn filter(webauthn: Option<bool>, requirement: Option<&str>) -> Vec<(String, Vec<String>)> {
        let mut conditions = Vec::new();
        let enrolled = "(security_keys + device_authenticators + legacy_keys) > 0";
        match webauthn {
            Some(true) => conditions.push((
                format!("user_id IN (SELECT user_id FROM mfa_view WHERE {enrolled})"),
                Vec::new(),
            )),
            Some(false) => conditions.push((
                format!("user_id NOT IN (SELECT user_id FROM mfa_view WHERE {enrolled})"),
                Vec::new(),
            )),
            None => {}
        }
        match requirement {
            Some("default") => conditions.push((
                "user_id NOT IN (SELECT user_id FROM mfa_view WHERE requirement IS NOT NULL)"
                    .into(),
                Vec::new(),
            )),
            Some(value) => conditions.push((
                "user_id IN (SELECT user_id FROM mfa_view WHERE requirement = ?)".into(),
                vec![value.to_owned()],
            )),
            None => {}
        }
        conditions
    }
}

fn read_row(row: &AnyRow) -> Result<MfaRow, ProjectionError> {
    let text: String = row.try_get("user_id")?;
    let count = |col: &str| -> Result<u32, ProjectionError> {
        Ok(u32::try_from(row.try_get::<i64, _>(col)?).unwrap_or(0))
    };
    Ok(MfaRow {
        user_id: Uuid::parse_str(&text).map_err(|e| ProjectionError::Malformed {
            position: 0,
            reason: e.to_string(),
        })?,
        security_keys: count("security_keys")?,
        device_authenticators: count("device_authenticators")?,
        legacy_keys: count("legacy_keys")?,
        totp: row.try_get::<i64, _>("totp")? != 0,
        requirement: row.try_get("requirement")?,
        last_mfa_at: row
            .try_get::<Option<i64>, _>("last_mfa_at")?
            .map(from_micros),
    })
}

async fn load(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<BTreeMap<String, MfaRow>, ProjectionError> {
    let mut rows = BTreeMap::new();
    for chunk in ids.chunks(200) {
        let sql = format!(
            "SELECT {COLUMNS} FROM mfa_view WHERE user_id IN ({})",
            placeholders(conn, 0, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let row = read_row(&row)?;
            rows.insert(row.user_id.to_string(), row);
        }
    }
    Ok(rows)
}

impl Projection for MfaView {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["mfa_view"]
    }

    fn folds(&self) -> EventFilter {
        EventFilter::Only(vec![FOLDS])
    }

    async fn migrate(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS mfa_view (\
                user_id TEXT PRIMARY KEY, security_keys BIGINT NOT NULL, \
                device_authenticators BIGINT NOT NULL, legacy_keys BIGINT NOT NULL, \
                totp BIGINT NOT NULL, requirement TEXT, last_mfa_at BIGINT)",
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn clear(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM mfa_view")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut decoded = Vec::new();
        for event in events.iter().filter(|e| FOLDS.contains(e)) {
            let user_event = decode::<UserEvent>(event)?;
            if concerns_mfa(&user_event) {
                decoded.push((event.stream.id.clone(), user_event));
            }
        }
        if decoded.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<&str> = decoded.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut rows = load(conn, &ids).await?;
        for (id, event) in &decoded {
            let row = rows.entry(id.clone()).or_insert_with(|| MfaRow {
                user_id: Uuid::parse_str(id).unwrap_or_default(),
                ..MfaRow::default()
            });
            fold(row, event);
        }
        for row in rows.values() {
            let sql = format!(
                "INSERT INTO mfa_view ({COLUMNS}) VALUES ({}) ON CONFLICT (user_id) DO UPDATE SET \
                 security_keys = excluded.security_keys, \
                 device_authenticators = excluded.device_authenticators, \
                 legacy_keys = excluded.legacy_keys, totp = excluded.totp, \
                 requirement = excluded.requirement, last_mfa_at = excluded.last_mfa_at",
                placeholders(conn, 0, 7)
            );
            sqlx::query(&sql)
                .bind(row.user_id.to_string())
                .bind(i64::from(row.security_keys))
                .bind(i64::from(row.device_authenticators))
                .bind(i64::from(row.legacy_keys))
                .bind(i64::from(row.totp))
                .bind(row.requirement.clone())
                .bind(row.last_mfa_at.map(micros))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use keyledger_domain::mfa::{CredentialActor, CredentialId};
    use keyledger_domain::user::{
        MfaRequirementChanged, NewCredential, TotpAdded, WebauthnRegistered, WebauthnRemoved,
    };

    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap()
    }

    fn id(n: u8) -> CredentialId {
        CredentialId::parse(&format!("{}{n:02}", "B".repeat(20))).unwrap()
    }

    fn registered(n: u8, kind: CredentialKind) -> UserEvent {
        UserEvent::WebauthnRegistered(WebauthnRegistered {
            credential: NewCredential {
                credential_id: id(n),
                label: "k".into(),
                kind,
                aaguid: Uuid::nil(),
                authenticator_name: None,
                transports: Vec::new(),
                user_verified: true,
                backup_eligible: false,
                backed_up: false,
                sign_count: 0,
            },
            registered_by: CredentialActor::User,
            at: at(1),
        })
    }

    #[test]
    fn counts_follow_registrations_and_removals_by_kind() {
        let mut row = MfaRow::default();
        for event in [
            registered(1, CredentialKind::SecurityKey),
            registered(2, CredentialKind::DeviceAuthenticator),
            registered(3, CredentialKind::SecurityKey),
            UserEvent::WebauthnRemoved(WebauthnRemoved {
                credential_id: id(1),
                label: "k".into(),
                kind: CredentialKind::SecurityKey,
                by: CredentialActor::User,
                lockout_warning_overridden: false,
                at: at(2),
            }),
            UserEvent::TotpAdded(TotpAdded { step: 1, at: at(3) }),
            UserEvent::MfaRequirementChanged(MfaRequirementChanged {
                requirement: Some(MfaRequirement::Required),
                at: at(4),
            }),
        ] {
            // Each is among the events the view declares it folds, or `apply` never sees it.
            let event_type = cqrs_es::DomainEvent::event_type(&event);
            assert!(
                FOLDS
                    .type_prefixes
                    .iter()
                    .any(|p| event_type.starts_with(p)),
                "{event_type}"
            );
            fold(&mut row, &event);
        }
        assert_eq!(row.security_keys, 1);
        assert_eq!(row.device_authenticators, 1);
        assert_eq!(row.webauthn_count(), 2);
        assert!(row.totp);
        assert_eq!(row.requirement.as_deref(), Some("required"));
    }
}
