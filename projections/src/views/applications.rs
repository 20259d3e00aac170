//! The applications view: one row per application, with the workflow overrides the admin
//! API lists. The API decides with the aggregate; this view only serves listings.

use chrono::{DateTime, Utc};
use keyledger_domain::application::{ApplicationEvent, WorkflowOverride};
use keyledger_store::{Database, EventClass, EventFilter, RecordedEvent};
use sqlx::{AnyConnection, Row, any::AnyRow};
use uuid::Uuid;

use super::{decode, from_micros, micros};
use crate::error::ProjectionError;
use crate::runner::Projection;

pub const NAME: &str = "applications";
pub const STREAM_KIND: &str = "application";

const FOLDS: EventClass = EventClass {
    stream_kind: STREAM_KIND,
    type_prefixes: &[],
};

pub struct ApplicationsView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationRow {
    pub application_id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// `inherit`, `on` or `off`.
    pub bootstrap: String,
    pub reauthentication: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "application_id, tenant_id, name, bootstrap, reauthentication, created_at, updated_at";

fn override_text(value: WorkflowOverride) -> &'static str {
    match value {
        WorkflowOverride::Inherit => "inherit",
        WorkflowOverride::On => "on",
        WorkflowOverride::Off => "off",
    }
}

impl ApplicationsView {
    /// A tenant's applications, oldest first (ids are time-ordered).
    pub async fn list(
        db: &Database,
        tenant_id: Uuid,
    ) -> Result<Vec<ApplicationRow>, ProjectionError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM applications_view WHERE tenant_id = $1 ORDER BY application_id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant_id.to_string())
            .fetch_all(db.pool())
            .await?;
        rows.iter().map(read_row).collect()
    }
}

fn read_row(row: &AnyRow) -> Result<ApplicationRow, ProjectionError> {
    let uuid = |col: &str| -> Result<Uuid, ProjectionError> {
        let text: String = row.try_get(col)?;
        Uuid::parse_str(&text).map_err(|e| ProjectionError::Malformed {
            position: 0,
            reason: e.to_string(),
        })
    };
    Ok(ApplicationRow {
        application_id: uuid("application_id")?,
        tenant_id: uuid("tenant_id")?,
        name: row.try_get("name")?,
        bootstrap: row.try_get("bootstrap")?,
        reauthentication: row.try_get("reauthentication")?,
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}

impl Projection for ApplicationsView {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["applications_view"]
    }

    fn folds(&self) -> EventFilter {
        EventFilter::Only(vec![FOLDS])
    }

    async fn migrate(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS applications_view (\
                application_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL, \
                bootstrap TEXT NOT NULL, reauthentication TEXT NOT NULL, \
                created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS applications_view_tenant \
             ON applications_view (tenant_id, application_id)",
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn clear(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM applications_view")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        // Applications change rarely: one statement per event is plenty.
        for event in events.iter().filter(|e| FOLDS.contains(e)) {
            match decode::<ApplicationEvent>(event)? {
                ApplicationEvent::Created(e) => {
                    sqlx::query(
                        "INSERT INTO applications_view (application_id, tenant_id, name, \
                         bootstrap, reauthentication, created_at, updated_at) \
                         VALUES ($1, $2, $3, 'inherit', 'inherit', $4, $4) \
                         ON CONFLICT (application_id) DO NOTHING",
                    )
                    .bind(e.application_id.to_string())
                    .bind(e.tenant_id.to_string())
                    .bind(e.name)
                    .bind(micros(e.at))
                    .execute(&mut *conn)
                    .await?;
                }
                ApplicationEvent::WorkflowOverridesChanged(e) => {
                    sqlx::query(
                        "UPDATE applications_view SET bootstrap = $1, reauthentication = $2, \
                         updated_at = $3 WHERE application_id = $4",
                    )
                    .bind(override_text(e.overrides.bootstrap))
                    .bind(override_text(e.overrides.reauthentication))
                    .bind(micros(e.at))
                    .bind(event.stream.id.clone())
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        Ok(())
    }
}
