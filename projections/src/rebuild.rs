//! Rebuilding views from position zero into fresh tables, then swapping them in atomically,
//! so the API keeps serving the old rows until the new ones are complete. Or, with
//! [`compare`], rebuilding beside the live views and reporting every difference.
//!
//! The fresh tables are made by the view's own code, redirected without the view knowing:
//! on PostgreSQL the rebuild's connection puts a scratch schema first on its `search_path`,
//! so the view's unqualified `CREATE TABLE` and writes land there; on SQLite it creates
//! `TEMP` tables from the live tables' DDL, which unqualified names resolve to first. The swap
//! is one transaction that also folds whatever the live follower had reached, so the view
//! never goes back in time: on PostgreSQL it drops the live table and moves the fresh one in;
//! on SQLite it replaces the live rows that differ from the fresh ones, and only those (readers
//! keep their snapshot).
//!
//! Rebuilding several views reads the log once: each batch read feeds every fresh view, the
//! views fold it concurrently on their own connections, and the next batch is read meanwhile.

use std::sync::Arc;

use keyledger_store::{Backend, EventFilter, EventLog, RecordedEvent};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use crate::checkpoint::{self, to_i64, to_u64};
use crate::error::ProjectionError;
use crate::runner::{Projection, migrate_all};
use crate::view::View;

/// Events folded per transaction into the fresh tables.
const BATCH: u32 = 5_000;

fn selected(projection: Option<&str>) -> Result<Vec<View>, ProjectionError> {
    match projection {
        Some(name) => Ok(vec![View::named(name)?]),
        None => crate::PROJECTIONS.iter().map(|p| View::named(p)).collect(),
    }
}

/// Rebuilds the named projection (or all of them) into fresh tables and swaps them in.
/// `progress` hears the projection's name and the position folded so far. Returns the
/// position the swapped-in views reached.
pub async fn rebuild(
    log: &EventLog,
    projection: Option<&str>,
    mut progress: impl FnMut(&str, u64),
) -> Result<u64, ProjectionError> {
    migrate_all(log).await?;
    let mut reached = 0;
    let mut fresh = Vec::new();
    for view in selected(projection)? {
        if view.tables().is_empty() {
            reached = in_place(&view, log, &mut progress).await?;
        } else {
            fresh.push(Fresh::open(view, log).await?);
        }
    }
    log.refresh_statistics().await?;
    let head = log.head().await?.map_or(0, |h| h.position);
    let folding = std::time::Instant::now();
    let fresh = fold_together(fresh, log, head, &mut progress).await?;
    tracing::info!(
        to = head,
        seconds = folding.elapsed().as_secs_f64(),
        "folded the log into fresh tables"
    );
    // Each swap folds the few events appended since `head` and takes the live follower's
    // place; views are independent, so swapping them one after the other is consistent.
    for fresh in fresh {
        let name = fresh.view.name();
        let swapping = std::time::Instant::now();
        reached = swap_in(fresh, log, &mut progress).await?;
        // On SQLite a swap writes each row that differs into the live tables and their indexes:
        // over an empty or stale view it can take as long as the fold, worth seeing apart.
        tracing::info!(
            projection = name,
            seconds = swapping.elapsed().as_secs_f64(),
            "swapped the fresh view in"
        );
    }
    Ok(reached)
}

/// Folds the log up to `to` into every fresh view, reading each batch once. The read and each
/// view's fold run on tasks of their own, so that they spread over the cores (most of a fold
/// is ours: decoding rows, opening sealed fields, binding values): each view folds a batch
/// in its own transaction, on its own connection, while the next batch is read.
async fn fold_together(
    mut fresh: Vec<Fresh>,
    log: &EventLog,
    to: u64,
    progress: &mut impl FnMut(&str, u64),
) -> Result<Vec<Fresh>, ProjectionError> {
    let Some(from) = fresh.iter().map(|f| f.position).min() else {
        return Ok(fresh);
    };
    // Only what some view folds: rebuilding a view of a few event types alone then reads
    // those, not the whole log. With the audit view among them, that is every event.
    let Some(filter) = fresh
        .iter()
        .map(|f| f.view.folds())
        .reduce(EventFilter::union)
    else {
        return Ok(fresh);
    };
    let filter = Arc::new(filter);
    let read = |after: u64| {
        let log = log.clone();
        let filter = Arc::clone(&filter);
        tokio::spawn(async move { log.read_selected_revealed(after, to, BATCH, &filter).await })
    };
    let mut events = if from < to {
        finished(read(from).await)??
    } else {
        Vec::new()
    };
    while let Some(last) = events.last().map(|e| e.position) {
        let next = (last < to).then(|| read(last));
        let batch = Arc::new(events);
        let folds: Vec<_> = fresh
            .drain(..)
            .map(|mut view| {
                let events = Arc::clone(&batch);
                tokio::spawn(async move {
                    let folded = view.fold(&events).await;
                    (view, folded)
                })
            })
            .collect();
        let mut failed = None;
        for fold in folds {
            let (view, folded) = finished(fold.await)?;
            if let Err(error) = folded {
                failed.get_or_insert(error);
            }
            progress(view.view.name(), view.position);
            fresh.push(view);
        }
        if let Some(error) = failed {
            return Err(error);
        }
        events = match next {
            Some(next) => finished(next.await)??,
            None => Vec::new(),
        };
    }
    // Every event up to `to` that a view folds is in it, even where the last of them is
    // earlier: the view stands at `to`.
    for view in &mut fresh {
        view.position = view.position.max(to);
    }
    Ok(fresh)
}

/// What a spawned task returned; a task that panicked or was cancelled is an error.
fn finished<T>(joined: Result<T, tokio::task::JoinError>) -> Result<T, ProjectionError> {
    joined.map_err(|e| ProjectionError::FoldTask(e.to_string()))
}

/// A row that differs between a live view and its rebuild, by the table's first column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub table: &'static str,
    pub key: String,
    pub kind: DifferenceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DifferenceKind {
    /// In the live view, not in the rebuild.
    OnlyLive,
    /// In the rebuild, not in the live view.
    OnlyRebuilt,
    /// In both, with these columns' values (live, rebuilt) differing.
    Changed(Vec<(String, String, String)>),
}

/// What `--compare` found for one projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub projection: &'static str,
    /// The position both sides had folded when compared.
    pub position: u64,
    pub differences: Vec<Difference>,
}

/// Rebuilds beside the live views and reports every difference; swaps nothing in.
pub async fn compare(
    log: &EventLog,
    projection: Option<&str>,
    mut progress: impl FnMut(&str, u64),
) -> Result<Vec<Comparison>, ProjectionError> {
    migrate_all(log).await?;
    log.refresh_statistics().await?;
    let mut found = Vec::new();
    for view in selected(projection)? {
        found.push(compare_one(view, log, &mut progress).await?);
    }
    Ok(found)
}

/// A dedicated connection whose unqualified view tables are fresh, empty copies.
struct Fresh {
    view: View,
    conn: AnyConnection,
    backend: Backend,
    tables: &'static [&'static str],
    schema: String,
    /// The position folded into the fresh tables.
    position: u64,
    /// Batches folded so far.
    batches: u64,
}

impl Fresh {
    async fn open(view: View, log: &EventLog) -> Result<Self, ProjectionError> {
        let projection = &view;
        // Detached: the redirection must never go back to the pool with the connection.
        let mut conn = log.database().pool().acquire().await?.detach();
        let backend = log.database().backend();
        let schema = format!("keyledger_rebuild_{}", projection.name());
        let tables = projection.tables();
        match backend {
            Backend::Postgres => {
                for sql in [
                    format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                    format!("CREATE SCHEMA {schema}"),
                    format!("SET search_path TO {schema}, public"),
                ] {
                    sqlx::query(&sql).execute(&mut conn).await?;
                }
                projection.migrate(&mut conn).await?;
            }
            Backend::Sqlite => {
                for table in tables {
                    let ddl: String = sqlx::query(
                        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1",
                    )
                    .bind(*table)
                    .fetch_one(&mut conn)
                    .await?
                    .try_get(0)?;
                    let ddl = ddl
                        .replacen("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE", 1)
                        .replacen("CREATE TABLE ", "CREATE TEMP TABLE ", 1);
                    sqlx::query(&format!("DROP TABLE IF EXISTS temp.{table}"))
                        .execute(&mut conn)
                        .await?;
                    sqlx::query(&ddl).execute(&mut conn).await?;
                }
            }
        }
        Ok(Self {
            view,
            conn,
            backend,
            tables,
            schema,
            position: 0,
            batches: 0,
        })
    }

    /// (live, fresh) qualified names of each table.
    fn pairs(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .map(|t| (self.live(t), self.fresh(t)))
            .collect()
    }

    fn live(&self, table: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("public.{table}"),
            Backend::Sqlite => format!("main.{table}"),
        }
    }

    fn fresh(&self, table: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("{}.{table}", self.schema),
            Backend::Sqlite => format!("temp.{table}"),
        }
    }

    /// Folds a batch of events in one transaction; events it already holds are skipped.
    async fn fold(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let start = events.partition_point(|e| e.position <= self.position);
        let events = &events[start..];
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(());
        };
        let mut tx = self.conn.begin().await?;
        self.view.apply(&mut tx, events).await?;
        tx.commit().await?;
        self.position = last;
        self.batches += 1;
        // PostgreSQL plans from statistics that a fresh table lacks: a view looking up the
        // rows of a batch's users (`IN (…200 ids…)`) then reads the whole table for each
        // page, a rebuild quadratic in the users. Analysed as it doubles, it looks them up by
        // key. SQLite needs no statistics to use a primary key.
        if self.backend == Backend::Postgres && self.batches.is_power_of_two() {
            for table in self.tables {
                let fresh = self.fresh(table);
                sqlx::query(&format!("ANALYZE {fresh}"))
                    .execute(&mut self.conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Folds the log into the fresh tables up to `to`, one transaction per batch.
    async fn fold_to(
        self,
        log: &EventLog,
        to: u64,
        progress: &mut impl FnMut(&str, u64),
    ) -> Result<Self, ProjectionError> {
        fold_together(vec![self], log, to, progress)
            .await?
            .pop()
            .ok_or_else(|| ProjectionError::FoldTask("the fold lost its view".into()))
    }

    /// Folds the events the view folds after `from` up to `to` inside the caller's
    /// transaction. Returns where the view then stands.
    async fn fold_in<P: Projection>(
        projection: &P,
        conn: &mut AnyConnection,
        log: &EventLog,
        from: u64,
        to: u64,
    ) -> Result<u64, ProjectionError> {
        let filter = projection.folds();
        let mut at = from;
        while at < to {
            let events = log.read_selected_revealed(at, to, BATCH, &filter).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            projection.apply(conn, &events).await?;
            at = last;
        }
        Ok(from.max(to))
    }

    async fn close(mut self) -> Result<(), ProjectionError> {
        match self.backend {
            Backend::Postgres => {
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                    .execute(&mut self.conn)
                    .await?;
            }
            Backend::Sqlite => {
                for table in self.tables {
                    sqlx::query(&format!("DROP TABLE IF EXISTS temp.{table}"))
                        .execute(&mut self.conn)
                        .await?;
                }
            }
        }
        self.conn.close().await?;
        Ok(())
    }
}

/// Folds what was appended since `fresh` was folded and swaps it in for the live view.
async fn swap_in(
    mut fresh: Fresh,
    log: &EventLog,
    progress: &mut impl FnMut(&str, u64),
) -> Result<u64, ProjectionError> {
    let name = fresh.view.name();
    let backend = fresh.backend;
    let pairs = fresh.pairs();
    let tables = fresh.tables;
    let folded = fresh.position;
    let mut tx = fresh.conn.begin().await?;
    // Hold the checkpoint row: the live follower waits, and then folds on top of the new
    // tables from where they stand.
    let lock = match backend {
        Backend::Postgres => {
            "SELECT position FROM public.projection_checkpoints WHERE name = $1 FOR UPDATE"
        }
        // A write first, so SQLite takes the write lock before any read.
        Backend::Sqlite => {
            "UPDATE projection_checkpoints SET position = position WHERE name = $1 RETURNING position"
        }
    };
    let live: i64 = sqlx::query(lock)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let target = to_u64(live).max(folded);
    let reached = Fresh::fold_in(&fresh.view, &mut tx, log, folded, target).await?;
    for (table, (live_table, fresh_table)) in tables.iter().zip(&pairs) {
        let statements = match backend {
            Backend::Postgres => vec![
                format!("DROP TABLE {live_table}"),
                format!("ALTER TABLE {fresh_table} SET SCHEMA public"),
            ],
            Backend::Sqlite => sqlite_replacement(&mut tx, table, live_table, fresh_table).await?,
        };
        for sql in statements {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
    }
    sqlx::query("UPDATE projection_checkpoints SET position = $1 WHERE name = $2")
        .bind(to_i64(reached))
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    progress(name, reached);
    fresh.close().await?;
    // PostgreSQL: the moved table keeps its indexes; recreate nothing. Both: make sure the
    // checkpoint row exists for a projection rebuilt before its first start.
    let mut conn = log.database().pool().acquire().await?;
    checkpoint::ensure(&mut conn, name).await?;
    Ok(reached)
}

/// The statements that make SQLite's live `table` hold exactly the fresh table's rows. The
/// fresh table cannot be renamed into the live one's place (it is a `TEMP` table), so rows
/// are written; only those that differ, by the table's primary key: a row that is the same on
/// both sides stays. A rebuild of a healthy view then rewrites nothing, where copying every
/// row made SQLite insert it again into each of the live table's indexes (8–9 s for a million
/// audit rows, a third of the rebuild).
async fn sqlite_replacement(
    conn: &mut AnyConnection,
    table: &str,
    live: &str,
    fresh: &str,
) -> Result<Vec<String>, ProjectionError> {
    let columns: Vec<(String, i64)> =
        sqlx::query("SELECT name, pk FROM pragma_table_info($1, 'main')")
            .bind(table)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let key: Vec<String> = columns
        .iter()
        .filter(|(_, pk)| *pk > 0)
        .map(|(name, _)| quoted(name))
        .collect();
    if key.is_empty() {
        // Without a key, rows cannot be paired: copy them all.
        return Ok(vec![
            format!("DELETE FROM {live}"),
            format!("INSERT INTO {live} SELECT * FROM {fresh}"),
        ]);
    }
    let same_key = |a: &str, b: &str| {
        key.iter()
            .map(|c| format!("{a}.{c} = {b}.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    // `IS`: two NULLs are the same value.
    let same_row = columns
        .iter()
        .map(|(name, _)| {
            let c = quoted(name);
            format!("f.{c} IS l.{c}")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    Ok(vec![
        // Live rows with no identical fresh row: changed, or gone from the rebuild.
        format!(
            "DELETE FROM {live} AS l WHERE NOT EXISTS \
             (SELECT 1 FROM {fresh} AS f WHERE {} AND {same_row})",
            same_key("f", "l")
        ),
        // Every live row left has an identical fresh row: add the fresh rows it lacks.
        format!(
            "INSERT INTO {live} SELECT * FROM {fresh} AS f WHERE NOT EXISTS \
             (SELECT 1 FROM {live} AS l WHERE {})",
            same_key("l", "f")
        ),
    ])
}

/// The rebuild of a projection that lists no tables: empties it and folds again. Readers see
/// it empty meanwhile. The emptying and the checkpoint reset commit together, and a running
/// follower notices the reset (its compare-and-set fails) instead of folding twice.
async fn in_place<P: Projection>(
    projection: &P,
    log: &EventLog,
    progress: &mut impl FnMut(&str, u64),
) -> Result<u64, ProjectionError> {
    let mut conn = log.database().pool().acquire().await?;
    let mut tx = conn.begin().await?;
    checkpoint::reset(&mut tx, projection.name()).await?;
    projection.clear(&mut tx).await?;
    tx.commit().await?;
    crate::runner::catch_up(projection, log, |position| {
        progress(projection.name(), position)
    })
    .await
}

/// Attempts at finding the live view standing still long enough to compare.
const COMPARE_ATTEMPTS: usize = 20;

async fn compare_one(
    view: View,
    log: &EventLog,
    progress: &mut impl FnMut(&str, u64),
) -> Result<Comparison, ProjectionError> {
    let name = view.name();
    if view.tables().is_empty() {
        return Err(ProjectionError::UnknownProjection(format!(
            "{name} (it lists no tables to compare)"
        )));
    }
    // The fresh tables follow the live view's checkpoint, never the head: a fold cannot be
    // undone, so a fresh view folded past a live one that a running server has not yet
    // brought up to the head would differ from it by the events in between.
    let mut fresh = Fresh::open(view, log).await?;
    let mut attempt = 0;
    let differences = loop {
        attempt += 1;
        let live = {
            let mut conn = log.database().pool().acquire().await?;
            checkpoint::read(&mut conn, name).await?
        };
        fresh = fresh.fold_to(log, live, progress).await?;
        let (backend, pairs, folded) = (fresh.backend, fresh.pairs(), fresh.position);
        let mut tx = fresh.conn.begin().await?;
        if backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let still: i64 = sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if to_u64(still) != folded && attempt < COMPARE_ATTEMPTS {
            tx.rollback().await?;
            continue;
        }
        let mut differences = Vec::new();
        for ((live_table, fresh_table), table) in pairs.iter().zip(fresh.tables) {
            let only_live = sqlx::query(&format!(
                "SELECT * FROM {live_table} EXCEPT SELECT * FROM {fresh_table}"
            ))
            .fetch_all(&mut *tx)
            .await?;
            let only_fresh = sqlx::query(&format!(
                "SELECT * FROM {fresh_table} EXCEPT SELECT * FROM {live_table}"
            ))
            .fetch_all(&mut *tx)
            .await?;
            differences.extend(differ(table, &only_live, &only_fresh));
        }
        tx.commit().await?;
        break differences;
    };
    let position = fresh.position;
    fresh.close().await?;
    Ok(Comparison {
        projection: name,
        position,
        differences,
    })
}

/// Pairs rows by their first column (the table's key) and names the columns that differ.
fn differ(table: &'static str, live: &[AnyRow], fresh: &[AnyRow]) -> Vec<Difference> {
    let render = |row: &AnyRow| -> Vec<(String, String)> {
        row.columns()
            .iter()
            .enumerate()
            .map(|(i, c)| (sqlx::Column::name(c).to_owned(), cell(row, i)))
            .collect()
    };
    let live: Vec<Vec<(String, String)>> = live.iter().map(render).collect();
    let fresh: Vec<Vec<(String, String)>> = fresh.iter().map(render).collect();
    let key = |cells: &[(String, String)]| cells.first().map(|c| c.1.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for row in &live {
        let k = key(row);
        let kind = match fresh.iter().find(|f| key(f) == k) {
            Some(other) => DifferenceKind::Changed(
                row.iter()
                    .zip(other.iter())
                    .filter(|(a, b)| a.1 != b.1)
                    .map(|(a, b)| (a.0.clone(), a.1.clone(), b.1.clone()))
                    .collect(),
            ),
            None => DifferenceKind::OnlyLive,
        };
        out.push(Difference {
            table,
            key: k,
            kind,
        });
    }
    for row in &fresh {
        let k = key(row);
        if !live.iter().any(|l| key(l) == k) {
            out.push(Difference {
                table,
                key: k,
                kind: DifferenceKind::OnlyRebuilt,
            });
        }
    }
    out
}

/// A cell as text, whatever its type.
fn cell(row: &AnyRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v.unwrap_or_else(|| "NULL".into());
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map_or_else(|| "NULL".into(), |v| v.to_string());
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return v.map_or_else(|| "NULL".into(), |v| v.to_string());
    }
    if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
        return v.map_or_else(|| "NULL".into(), hex_string);
    }
    "?".into()
}

fn hex_string(bytes: Vec<u8>) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a panic is the failure report.
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;
    use keyledger_store::testing::fresh_sqlite_url;
    use keyledger_store::{
        AppendRequest, Database, EventMetadata, ExpectedVersion, NewEvent, StreamId,
    };
    use uuid::Uuid;

    use super::*;

    async fn append(
        log: &EventLog,
        stream_kind: &str,
        event_type: &str,
        payload: serde_json::Value,
    ) {
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            recorded_at: Utc::now(),
            payload,
            metadata: EventMetadata::system(),
        };
        let stream = StreamId::new(stream_kind, Uuid::now_v7().to_string());
        log.append(AppendRequest::new(
            stream,
            ExpectedVersion::Any,
            vec![event],
        ))
        .await
        .unwrap();
    }

    /// A log on a fresh SQLite file, with every view's tables.
    async fn fresh_log() -> EventLog {
        let log = EventLog::open(Database::connect(&fresh_sqlite_url()).await.unwrap())
            .await
            .unwrap();
        migrate_all(&log).await.unwrap();
        log
    }

    /// `thing.happened` events numbered `ns`, each in a stream of its own.
    async fn append_things(log: &EventLog, ns: std::ops::Range<i64>) {
        for n in ns {
            append(
                log,
                "thing",
                "thing.happened",
                serde_json::json!({ "n": n }),
            )
            .await;
        }
    }

    /// A row of the audit view: (rowid, position, type, outcome, reason).
    type AuditRow = (i64, i64, String, Option<String>, Option<String>);

    /// Rows of the audit view, in log order.
    async fn audit_rows(log: &EventLog) -> Vec<AuditRow> {
        let mut conn = log.database().pool().acquire().await.unwrap();
        sqlx::query(
            "SELECT rowid, position, event_type, outcome, reason FROM audit_view ORDER BY position",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    }

    /// On SQLite a rebuild repairs a live view whose rows were changed, removed or added
    /// behind its back, and leaves the rows that were right where they are (same rowid: not
    /// deleted and inserted again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuild_on_sqlite_rewrites_only_the_rows_that_differ() {
        let log = fresh_log().await;
        append_things(&log, 0..6).await;
        assert_eq!(rebuild(&log, Some("audit"), |_, _| {}).await.unwrap(), 6);
        {
            // Rowids that copying the rows again would not give them back.
            let mut conn = log.database().pool().acquire().await.unwrap();
            sqlx::query("UPDATE audit_view SET rowid = rowid + 100")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        let right = audit_rows(&log).await;
        assert_eq!(right.len(), 6);
        assert!(right.iter().all(|row| row.4.is_none()));

        let mut conn = log.database().pool().acquire().await.unwrap();
        for tamper in [
            "UPDATE audit_view SET event_type = 'thing.forged' WHERE position = 2",
            // NULL to a value: found only if NULLs compare as equal values.
            "UPDATE audit_view SET reason = 'forged' WHERE position = 3",
            "DELETE FROM audit_view WHERE position = 4",
            "INSERT INTO audit_view SELECT 99, recorded_at, tenant_id, event_type, stream_kind, \
             stream_id, user_id, actor_kind, actor_id, request_ip, user_agent, correlation_id, \
             outcome, reason, identifier FROM audit_view WHERE position = 5",
        ] {
            sqlx::query(tamper).execute(&mut *conn).await.unwrap();
        }
        drop(conn);

        assert_eq!(rebuild(&log, Some("audit"), |_, _| {}).await.unwrap(), 6);
        let repaired = audit_rows(&log).await;
        let without_rowid = |rows: &[AuditRow]| -> Vec<_> {
            rows.iter()
                .map(|r| (r.1, r.2.clone(), r.3.clone(), r.4.clone()))
                .collect()
        };
        assert_eq!(without_rowid(&repaired), without_rowid(&right));
        for untouched in [1, 5, 6] {
            let rowid = |rows: &[AuditRow]| rows.iter().find(|r| r.1 == untouched).map(|r| r.0);
            assert_eq!(rowid(&repaired), rowid(&right), "position {untouched}");
        }
    }

    /// A comparison is made where the live view stands: events the live view has not folded
    /// yet (a running server's follower is a moment behind the head) are no difference, and
    /// a row changed behind the view's back still is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_comparison_is_made_at_the_live_views_position_not_the_head() {
        let log = fresh_log().await;
        append_things(&log, 0..3).await;
        assert_eq!(rebuild(&log, Some("audit"), |_, _| {}).await.unwrap(), 3);
        append_things(&log, 3..5).await;

        let compared = compare(&log, Some("audit"), |_, _| {}).await.unwrap();
        assert_eq!(compared.len(), 1);
        assert_eq!(compared[0].position, 3);
        assert!(
            compared[0].differences.is_empty(),
            "{:?}",
            compared[0].differences
        );

        let mut conn = log.database().pool().acquire().await.unwrap();
        sqlx::query("UPDATE audit_view SET event_type = 'thing.forged' WHERE position = 2")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        let compared = compare(&log, Some("audit"), |_, _| {}).await.unwrap();
        assert_eq!(
            compared[0].differences.len(),
            1,
            "{:?}",
            compared[0].differences
        );
        assert_eq!(compared[0].differences[0].key, "2");
    }

    /// A view rebuilt alone reads only the events it folds: a damaged event of another kind
    /// does not stop it (it stops a view that folds every event), and it stands at the log's
    /// head although its own last event is older.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_view_rebuilt_alone_reads_only_the_events_it_folds() {
        use cqrs_es::DomainEvent;
        use keyledger_domain::user::{TotpAdded, UserEvent};

        let log = fresh_log().await;
        let totp = UserEvent::TotpAdded(TotpAdded {
            step: 1,
            at: Utc::now(),
        });
        let payload = serde_json::to_value(&totp).unwrap()["data"].clone();
        append_things(&log, 1..3).await;
        append(&log, "user", &totp.event_type(), payload).await;
        append_things(&log, 4..6).await;
        let mut conn = log.database().pool().acquire().await.unwrap();
        sqlx::query("UPDATE events SET event_id = 'damaged' WHERE position = 2")
            .execute(&mut *conn)
            .await
            .unwrap();

        assert!(rebuild(&log, Some("audit"), |_, _| {}).await.is_err());
        assert_eq!(rebuild(&log, Some("mfa"), |_, _| {}).await.unwrap(), 5);
        let checkpoints = checkpoint::read_all(&mut conn).await.unwrap();
        assert_eq!(checkpoints.get("mfa"), Some(&5), "{checkpoints:?}");
        let totp_rows: i64 = sqlx::query("SELECT COUNT(*) FROM mfa_view WHERE totp = 1")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(totp_rows, 1);
    }

    /// A view that cannot fold an event fails the whole rebuild, and nothing is swapped in:
    /// every live view keeps its rows and its checkpoint, even one whose fresh tables folded
    /// the event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuild_that_cannot_fold_an_event_swaps_nothing_in() {
        let log = fresh_log().await;
        append_things(&log, 1..3).await;
        assert_eq!(rebuild(&log, None, |_, _| {}).await.unwrap(), 2);
        // The audit view folds any event; the users view cannot read this one.
        append(&log, "user", "user.unlocked", serde_json::json!({"by": 7})).await;

        let error = rebuild(&log, None, |_, _| {}).await.unwrap_err();
        assert!(
            matches!(error, ProjectionError::Malformed { position: 3, .. }),
            "{error:?}"
        );
        let mut conn = log.database().pool().acquire().await.unwrap();
        let audit_rows: i64 = sqlx::query("SELECT COUNT(*) FROM audit_view")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(audit_rows, 2);
        let checkpoints = checkpoint::read_all(&mut conn).await.unwrap();
        assert!(
            crate::PROJECTIONS
                .iter()
                .all(|name| checkpoints.get(*name) == Some(&2)),
            "{checkpoints:?}"
        );
    }
}
