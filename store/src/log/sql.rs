//! The log's queries. Statements whose size depends on the batch are chunked, to stay far
//! below the backends' limits (SQLite: 32,766 parameters, 500 compound selects, expression
//! depth 1,000; PostgreSQL: 65,535 parameters), and are not kept as prepared statements,
//! since each chunk size is a different statement.

use std::collections::HashMap;
use std::fmt::Write as _;

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use super::plan::{SecretState, StoredEvent};
use super::script::{Marks, Statement};
use crate::codec::{get_hash, get_time, get_u32, get_u64, get_uuid, micros, to_i64};
use crate::error::StoreError;
use crate::model::{ChainHead, ClaimKey, EventClass, RecordedEvent, StreamId};

const EVENT_COLUMNS: &str = "position, event_id, tenant_id, stream_kind, stream_id, \
    stream_version, event_type, schema_version, recorded_at, payload, metadata, prev_hash, hash";
const EVENT_COLUMN_COUNT: usize = 13;

/// 13 columns × 250 rows = 3,250 parameters.
const INSERT_CHUNK: usize = 250;
/// Each stream is one scalar subquery of a UNION ALL.
const STREAM_CHUNK: usize = 100;
const ID_CHUNK: usize = 500;
/// Each key is one `(.. AND ..)` term of an OR.
const KEY_CHUNK: usize = 100;

/// The marks of the connection's backend.
fn marks_of(conn: &AnyConnection) -> Marks {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        Marks::Anonymous
    } else {
        Marks::Numbered
    }
}

/// `($1, $2), ($3, $4)`: `rows` tuples of `columns` placeholders, numbered from 1.
fn tuples(marks: Marks, rows: usize, columns: usize) -> String {
    tuples_after(marks, 0, rows, columns)
}

/// [`tuples`] numbered from `before + 1`.
fn tuples_after(marks: Marks, before: usize, rows: usize, columns: usize) -> String {
    let mut sql = String::new();
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            marks.push(&mut sql, before + row * columns + column + 1);
        }
        sql.push(')');
    }
    sql
}

/// `(a, b) IN (VALUES ($1, $2), ($3, $4))`: matches any of `rows` keys.
///
/// Not `(a = $1 AND b = $2) OR (a = $3 AND b = $4)`: PostgreSQL plans that with the columns
/// whose values every key shares (a claim's tenant and kind, a secret's owner kind and kind)
/// as the only index condition whenever its statistics are behind the table, as they are while
/// users are being loaded, and then scans every key of that kind: 180 ms for 50 keys among
/// 200,000, against 0.2 ms for the join on the whole key that the list of values gives.
fn any_key(marks: Marks, columns: &[&str], rows: usize) -> String {
    format!(
        "({}) IN (VALUES {})",
        columns.join(", "),
        tuples(marks, rows, columns.len())
    )
}

pub(super) fn decode_event(row: &AnyRow) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        position: get_u64(row, "position")?,
        event_id: get_uuid(row, "event_id")?,
        tenant_id: get_uuid(row, "tenant_id")?,
        stream: StreamId {
            kind: row.try_get("stream_kind")?,
            id: row.try_get("stream_id")?,
        },
        stream_version: get_u64(row, "stream_version")?,
        event_type: row.try_get("event_type")?,
        schema_version: get_u32(row, "schema_version")?,
        recorded_at: get_time(row, "recorded_at")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        prev_hash: get_hash(row, "prev_hash")?,
        hash: get_hash(row, "hash")?,
    })
}

pub(super) async fn read_stream(
    pool: &AnyPool,
    stream: &StreamId,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_kind = $1 AND stream_id = $2 \
         ORDER BY stream_version"
    );
    sqlx::query(&sql)
        .bind(&stream.kind)
        .bind(&stream.id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_event)
        .collect()
}

/// Up to `limit` events of a stream after `after_version`, oldest first, or newest first
/// when `newest_first` (then `after_version` is ignored).
pub(super) async fn read_stream_page(
    pool: &AnyPool,
    stream: &StreamId,
    after_version: u64,
    limit: u32,
    newest_first: bool,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let (filter, order) = if newest_first {
        ("", "DESC")
    } else {
        (" AND stream_version > $3", "")
    };
    let limit_param = if newest_first { "$3" } else { "$4" };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_kind = $1 AND stream_id = $2{filter} \
         ORDER BY stream_version {order} LIMIT {limit_param}"
    );
    let mut query = sqlx::query(&sql).bind(&stream.kind).bind(&stream.id);
    if !newest_first {
        query = query.bind(to_i64(after_version)?);
    }
    query
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_event)
        .collect()
}

pub(super) async fn read_all(
    pool: &AnyPool,
    after: u64,
    limit: u32,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
    );
    sqlx::query(&sql)
        .bind(to_i64(after)?)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_event)
        .collect()
}

/// Up to `limit` events after `after` and up to `to` of the given classes, oldest first.
/// Prefixes are compared with `substr`, not `LIKE`, in which `_` would match any character.
/// The stream kind is compared as `stream_kind || ''` so that no planner reads it through the
/// stream index: for a kind that most events have (`user`), each page would then go through
/// all of that kind's entries and sort them, a rebuild quadratic in the log's length. Pages
/// follow the position instead, whose scan stops at `limit` matches.
pub(super) async fn read_selected(
    pool: &AnyPool,
    after: u64,
    to: u64,
    limit: u32,
    classes: &[EventClass],
) -> Result<Vec<RecordedEvent>, StoreError> {
    if classes.is_empty() || after >= to {
        return Ok(Vec::new());
    }
    let mut sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 AND position <= $2 AND (");
    let mut n = 2;
    for (i, class) in classes.iter().enumerate() {
        if i > 0 {
            sql.push_str(" OR ");
        }
        n += 1;
        let _ = write!(sql, "((stream_kind || '') = ${n}");
        if !class.type_prefixes.is_empty() {
            sql.push_str(" AND (");
            for (j, prefix) in class.type_prefixes.iter().enumerate() {
                if j > 0 {
                    sql.push_str(" OR ");
                }
                n += 1;
                let _ = write!(
                    sql,
                    "substr(event_type, 1, {}) = ${n}",
                    prefix.chars().count()
                );
            }
            sql.push(')');
        }
        sql.push(')');
    }
    let _ = write!(sql, ") ORDER BY position LIMIT ${}", n + 1);
    let mut query = sqlx::query(&sql).bind(to_i64(after)?).bind(to_i64(to)?);
    for class in classes {
        query = query.bind(class.stream_kind);
        for prefix in class.type_prefixes {
            query = query.bind(*prefix);
        }
    }
    query
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_event)
        .collect()
}

/// Generic over the executor: the writer reads the head inside its transaction, readers
/// through the pool.
pub(super) async fn head<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
) -> Result<Option<ChainHead>, StoreError> {
    let row = sqlx::query("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
        .fetch_optional(executor)
        .await?;
    row.map(|row| {
        Ok(ChainHead {
            position: get_u64(&row, "position")?,
            hash: get_hash(&row, "hash")?,
        })
    })
    .transpose()
}

pub(super) async fn claim_owner(
    pool: &AnyPool,
    key: &ClaimKey,
) -> Result<Option<StreamId>, StoreError> {
    let row = sqlx::query(
        "SELECT owner_kind, owner_id FROM claims WHERE scope = $1 AND kind = $2 AND value = $3",
    )
    .bind(&key.scope)
    .bind(&key.kind)
    .bind(&key.value)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(StreamId {
            kind: row.try_get("owner_kind")?,
            id: row.try_get("owner_id")?,
        })
    })
    .transpose()
}

pub(super) async fn claim_owner_with_secret(
    pool: &AnyPool,
    key: &ClaimKey,
    secret_kind: &str,
) -> Result<Option<(StreamId, Option<String>)>, StoreError> {
    let row = sqlx::query(
        "SELECT c.owner_kind, c.owner_id, s.value FROM claims c \
         LEFT JOIN secrets s ON s.owner_kind = c.owner_kind AND s.owner_id = c.owner_id \
         AND s.kind = $4 \
         WHERE c.scope = $1 AND c.kind = $2 AND c.value = $3",
    )
    .bind(&key.scope)
    .bind(&key.kind)
    .bind(&key.value)
    .bind(secret_kind)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok((
            StreamId {
                kind: row.try_get(0)?,
                id: row.try_get(1)?,
            },
            row.try_get::<Option<String>, _>(2)?,
        ))
    })
    .transpose()
}

pub(super) async fn secret(
    pool: &AnyPool,
    owner: &StreamId,
    kind: &str,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(
        "SELECT value FROM secrets WHERE owner_kind = $1 AND owner_id = $2 AND kind = $3",
    )
    .bind(&owner.kind)
    .bind(&owner.id)
    .bind(kind)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| row.try_get("value")).transpose()?)
}

/// The secrets of `owner` whose kind starts with `prefix` (which holds no LIKE wildcard).
pub(super) async fn secrets_with_prefix(
    pool: &AnyPool,
    owner: &StreamId,
    prefix: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT kind, value FROM secrets WHERE owner_kind = $1 AND owner_id = $2 \
         AND kind LIKE $3 ORDER BY kind",
    )
    .bind(&owner.kind)
    .bind(&owner.id)
    .bind(format!("{prefix}%"))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("kind")?, row.try_get("value")?)))
        .collect()
}

/// The first statement of every append transaction. On PostgreSQL the row lock it takes is
/// held until commit, so appenders on every node take turns and positions become visible in
/// order; on SQLite it makes sure the transaction holds the write lock before it reads.
pub(super) async fn take_append_lock(conn: &mut AnyConnection) -> Result<(), StoreError> {
    let updated = sqlx::query(APPEND_LOCK)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    check_append_lock(updated)
}

/// The statement that takes the append lock; it also counts batches.
pub(super) const APPEND_LOCK: &str = "UPDATE log_writer SET batches = batches + 1 WHERE id = 1";

/// The append lock for a batch decided on kept state: it fails (sets the count to NULL, which
/// the column refuses) unless the count is still `batches`, the one the kept state was left
/// at, so that no other writer can have committed since. As a failing statement, not a count
/// to check afterwards, it stops a SQLite script before the script's writes run.
pub(super) fn kept_state_lock(marks: Marks, batches: i64) -> Statement<'static> {
    let mut sql = String::from("UPDATE log_writer SET batches = CASE WHEN batches = ");
    marks.push(&mut sql, 1);
    sql.push_str(" THEN batches + 1 END WHERE id = 1");
    Statement::new(sql).int(batches)
}

/// What the lock statement must have changed: the one `log_writer` row.
pub(super) fn check_append_lock(updated: u64) -> Result<(), StoreError> {
    if updated != 1 {
        return Err(StoreError::Corrupt("the log_writer row is missing".into()));
    }
    Ok(())
}

/// Everything a batch must read under the append lock but its claims, in one statement where
/// the batch is small enough (every statement is a round trip on PostgreSQL and a thread
/// hand-off on SQLite, and a batch is decided while every other writer waits): the head, the
/// batch count, the version of each stream, and the stored events carrying any of the batch's
/// event ids. Streams and ids beyond the first chunk are read by the chunked queries.
pub(super) async fn snapshot(
    conn: &mut AnyConnection,
    streams: &[StreamId],
    ids: &[Uuid],
) -> Result<Snapshot, StoreError> {
    let first = SnapshotRead::new(marks_of(conn), streams, ids);
    let rows = super::script::kept_query(&first.statement)
        .fetch_all(&mut *conn)
        .await?;
    let snapshot = first.decode(&rows)?;
    snapshot.complete(conn).await
}

/// What a batch reads under the append lock, but its claims.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub head: Option<ChainHead>,
    /// Streams with no events are absent.
    pub versions: HashMap<StreamId, u64>,
    pub stored: HashMap<Uuid, StoredEvent>,
    /// `log_writer.batches`, counting this batch's own lock: the count a commit leaves.
    pub batches: i64,
}

/// The first statement of [`snapshot`], which may run in a script with others, and what
/// remains to read after it.
pub(super) struct SnapshotRead<'a> {
    pub statement: Statement<'a>,
    streams_now: &'a [StreamId],
    streams_later: &'a [StreamId],
    ids_later: &'a [Uuid],
}

/// What the first statement found, before the streams and ids beyond its chunk are read.
pub(super) struct PartialSnapshot<'a> {
    found: Snapshot,
    streams_later: &'a [StreamId],
    ids_later: &'a [Uuid],
}

impl<'a> SnapshotRead<'a> {
    pub(super) fn new(marks: Marks, streams: &'a [StreamId], ids: &'a [Uuid]) -> Self {
        let (streams_now, streams_later) = streams.split_at(streams.len().min(STREAM_CHUNK));
        let (ids_now, ids_later) = ids.split_at(ids.len().min(ID_CHUNK));
        // The NULLs take their types from the other branches of the union.
        let mut sql = String::from(
            "SELECT CAST(0 AS BIGINT) AS tag, h.position AS n, NULL AS m, h.hash AS h, \
             NULL AS event_id, NULL AS stream_kind, NULL AS stream_id, NULL AS event_type, \
             NULL AS payload \
             FROM (SELECT position, hash FROM events ORDER BY position DESC LIMIT 1) AS h",
        );
        let mut n = 0;
        if !streams_now.is_empty() {
            sql.push_str(
                " UNION ALL SELECT 1, v.column3, (SELECT MAX(e.stream_version) FROM events e \
                 WHERE e.stream_kind = v.column1 AND e.stream_id = v.column2), NULL, \
                 NULL, NULL, NULL, NULL, NULL FROM (VALUES ",
            );
            for i in 0..streams_now.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                marks.push(&mut sql, n + 1);
                sql.push_str(", ");
                marks.push(&mut sql, n + 2);
                let _ = write!(sql, ", {i})");
                n += 2;
            }
            sql.push_str(") AS v");
        }
        if !ids_now.is_empty() {
            sql.push_str(
                " UNION ALL SELECT 2, position, stream_version, NULL, event_id, stream_kind, \
                 stream_id, event_type, payload FROM events WHERE event_id IN (",
            );
            for i in 0..ids_now.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                marks.push(&mut sql, n);
            }
            sql.push(')');
        }
        // Last: PostgreSQL types a union's columns branch by branch, and NULLs met before the
        // other branches' types would be taken as text.
        sql.push_str(
            " UNION ALL SELECT 3, batches, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
             FROM log_writer WHERE id = 1",
        );
        let mut statement = Statement::new(sql);
        for stream in streams_now {
            statement = statement.text(&stream.kind).text(&stream.id);
        }
        for id in ids_now {
            statement = statement.owned_text(id.to_string());
        }
        SnapshotRead {
            statement,
            streams_now,
            streams_later,
            ids_later,
        }
    }

    /// Reads the rows of [`Self::statement`]. Rows are told apart by `tag`: 0 the head, 1 a
    /// stream (`n` its index, `m` its version), 2 a stored event, 3 the batch count (`n`).
    pub(super) fn decode(&self, rows: &[AnyRow]) -> Result<PartialSnapshot<'a>, StoreError> {
        let mut head = None;
        let mut versions = HashMap::new();
        let mut stored = HashMap::new();
        let mut batches = None;
        for row in rows {
            let tag: i64 = row.try_get("tag")?;
            match tag {
                0 => {
                    head = Some(ChainHead {
                        position: get_u64(row, "n")?,
                        hash: get_hash(row, "h")?,
                    });
                }
                1 => {
                    let i: i64 = row.try_get("n")?;
                    let stream = usize::try_from(i)
                        .ok()
                        .and_then(|i| self.streams_now.get(i))
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("unexpected stream index {i}"))
                        })?;
                    let version: Option<i64> = row.try_get("m")?;
                    if let Some(version) = version {
                        let version = u64::try_from(version).map_err(|_| {
                            StoreError::Corrupt(format!("stream {stream} has version {version}"))
                        })?;
                        versions.insert(stream.clone(), version);
                    }
                }
                2 => {
                    stored.insert(get_uuid(row, "event_id")?, stored_event(row, "n", "m")?);
                }
                3 => batches = Some(row.try_get::<i64, _>("n")?),
                other => {
                    return Err(StoreError::Corrupt(format!("unexpected row tag {other}")));
                }
            }
        }
        let batches =
            batches.ok_or_else(|| StoreError::Corrupt("the log_writer row is missing".into()))?;
        Ok(PartialSnapshot {
            found: Snapshot {
                head,
                versions,
                stored,
                batches,
            },
            streams_later: self.streams_later,
            ids_later: self.ids_later,
        })
    }
}

impl PartialSnapshot<'_> {
    /// Reads the streams and ids beyond the first statement's chunk (a batch of more than
    /// 100 streams or 500 events), each chunk a statement of its own.
    pub(super) async fn complete(self, conn: &mut AnyConnection) -> Result<Snapshot, StoreError> {
        let mut found = self.found;
        found
            .versions
            .extend(stream_versions(conn, self.streams_later).await?);
        found
            .stored
            .extend(stored_events(conn, self.ids_later).await?);
        Ok(found)
    }
}

/// The current version of each stream that has events.
pub(super) async fn stream_versions(
    conn: &mut AnyConnection,
    streams: &[StreamId],
) -> Result<HashMap<StreamId, u64>, StoreError> {
    let marks = marks_of(conn);
    let mut versions = HashMap::new();
    for chunk in streams.chunks(STREAM_CHUNK) {
        // One correlated MAX per stream walks the unique index backwards: O(log n) per
        // stream, however long the stream. The streams come in as one VALUES list: a UNION ALL
        // of one subquery per stream cost PostgreSQL 5-9 ms to plan at 64 streams, most of a
        // batch's time (see docs/benchmarks.md); this shape plans in well under a millisecond.
        // VALUES columns are `column1..` on both SQLite and PostgreSQL.
        let mut rows = String::new();
        for i in 0..chunk.len() {
            if i > 0 {
                rows.push_str(", ");
            }
            rows.push('(');
            marks.push(&mut rows, 2 * i + 1);
            rows.push_str(", ");
            marks.push(&mut rows, 2 * i + 2);
            let _ = write!(rows, ", {i})");
        }
        let sql = format!(
            "SELECT v.column3 AS i, (SELECT MAX(e.stream_version) FROM events e \
             WHERE e.stream_kind = v.column1 AND e.stream_id = v.column2) AS v \
             FROM (VALUES {rows}) AS v"
        );
        let mut query = sqlx::query(&sql).persistent(false);
        for stream in chunk {
            query = query.bind(&stream.kind).bind(&stream.id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let i: i64 = row.try_get("i")?;
            let version: Option<i64> = row.try_get("v")?;
            let stream = usize::try_from(i)
                .ok()
                .and_then(|i| chunk.get(i))
                .ok_or_else(|| StoreError::Corrupt(format!("unexpected stream index {i}")))?;
            if let Some(version) = version {
                let version = u64::try_from(version).map_err(|_| {
                    StoreError::Corrupt(format!("stream {stream} has version {version}"))
                })?;
                versions.insert(stream.clone(), version);
            }
        }
    }
    Ok(versions)
}

/// Stored events carrying any of `ids`.
pub(super) async fn stored_events(
    conn: &mut AnyConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, StoredEvent>, StoreError> {
    let marks = marks_of(conn);
    let mut found = HashMap::new();
    for chunk in ids.chunks(ID_CHUNK) {
        let mut placeholders = String::new();
        for n in 1..=chunk.len() {
            if n > 1 {
                placeholders.push_str(", ");
            }
            marks.push(&mut placeholders, n);
        }
        let sql = format!(
            "SELECT event_id, stream_kind, stream_id, event_type, payload, position, \
             stream_version FROM events WHERE event_id IN ({placeholders})"
        );
        let mut query = sqlx::query(&sql).persistent(false);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.insert(
                get_uuid(&row, "event_id")?,
                stored_event(&row, "position", "stream_version")?,
            );
        }
    }
    Ok(found)
}

/// A stored event as idempotency compares it, its position and stream version read from the
/// named columns.
fn stored_event(row: &AnyRow, position: &str, version: &str) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        stream: StreamId {
            kind: row.try_get("stream_kind")?,
            id: row.try_get("stream_id")?,
        },
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        position: get_u64(row, position)?,
        stream_version: get_u64(row, version)?,
    })
}

const CLAIM_KEY: &[&str] = &["scope", "kind", "value"];

/// The holders of those of `keys` that are held.
pub(super) async fn claims(
    conn: &mut AnyConnection,
    keys: &[ClaimKey],
) -> Result<HashMap<ClaimKey, StreamId>, StoreError> {
    let marks = marks_of(conn);
    let mut held = HashMap::new();
    for chunk in keys.chunks(KEY_CHUNK) {
        let sql = format!(
            "SELECT scope, kind, value, owner_kind, owner_id FROM claims WHERE {}",
            any_key(marks, CLAIM_KEY, chunk.len())
        );
        let mut query = sqlx::query(&sql).persistent(false);
        for key in chunk {
            query = query.bind(&key.scope).bind(&key.kind).bind(&key.value);
        }
        for row in query.fetch_all(&mut *conn).await? {
            held.insert(
                ClaimKey {
                    scope: row.try_get("scope")?,
                    kind: row.try_get("kind")?,
                    value: row.try_get("value")?,
                },
                StreamId {
                    kind: row.try_get("owner_kind")?,
                    id: row.try_get("owner_id")?,
                },
            );
        }
    }
    Ok(held)
}

pub(super) fn insert_events(
    marks: Marks,
    events: &[RecordedEvent],
) -> Result<Vec<Statement<'_>>, StoreError> {
    let mut statements = Vec::new();
    for chunk in events.chunks(INSERT_CHUNK) {
        let statement = Statement::new(format!(
            "INSERT INTO events ({EVENT_COLUMNS}) VALUES {}",
            tuples(marks, chunk.len(), EVENT_COLUMN_COUNT)
        ));
        statements.push(bind_events(statement, chunk)?);
    }
    Ok(statements)
}

/// The events of a batch decided on kept state, with the kept-state lock, as one PostgreSQL
/// statement: outside a transaction block it is a transaction of its own, one round trip
/// instead of four (`BEGIN`, lock, insert, `COMMIT`). The insert reads its rows through the
/// lock's, so the lock is taken before any row is written and held until the statement
/// commits, as in a transaction that runs the two in turn. `None` if the events need more
/// than one statement.
pub(super) fn insert_events_locked(
    events: &[RecordedEvent],
    batches: i64,
) -> Result<Option<Statement<'_>>, StoreError> {
    if events.is_empty() || events.len() > INSERT_CHUNK {
        return Ok(None);
    }
    // The lock's own parameter comes first; the rows' follow it.
    let mut statement = kept_state_lock(Marks::Numbered, batches);
    statement.sql = format!(
        "WITH held AS ({} RETURNING id) INSERT INTO events ({EVENT_COLUMNS}) \
         SELECT v.* FROM (VALUES {}) AS v ({EVENT_COLUMNS}) CROSS JOIN held",
        statement.sql,
        tuples_after(
            Marks::Numbered,
            statement.values.len(),
            events.len(),
            EVENT_COLUMN_COUNT
        )
    );
    bind_events(statement, events).map(Some)
}

fn bind_events<'a>(
    mut statement: Statement<'a>,
    events: &'a [RecordedEvent],
) -> Result<Statement<'a>, StoreError> {
    for e in events {
        statement = statement
            .int(to_i64(e.position)?)
            .owned_text(e.event_id.to_string())
            .owned_text(e.tenant_id.to_string())
            .text(&e.stream.kind)
            .text(&e.stream.id)
            .int(to_i64(e.stream_version)?)
            .text(&e.event_type)
            .int(i64::from(e.schema_version))
            .int(micros(e.recorded_at))
            .text(&e.payload)
            .text(&e.metadata)
            .bytes(&e.prev_hash)
            .bytes(&e.hash);
    }
    Ok(statement)
}

/// Sets each key's holder: deletes every changed key, then inserts the held ones.
pub(super) fn write_claims(
    marks: Marks,
    claims: &[(ClaimKey, Option<StreamId>)],
) -> Vec<Statement<'_>> {
    let mut statements = Vec::new();
    for chunk in claims.chunks(KEY_CHUNK) {
        let mut delete = Statement::new(format!(
            "DELETE FROM claims WHERE {}",
            any_key(marks, CLAIM_KEY, chunk.len())
        ));
        for (key, _) in chunk {
            delete = delete.text(&key.scope).text(&key.kind).text(&key.value);
        }
        statements.push(delete);
        let held: Vec<_> = chunk
            .iter()
            .filter_map(|(key, holder)| holder.as_ref().map(|h| (key, h)))
            .collect();
        if held.is_empty() {
            continue;
        }
        let mut insert = Statement::new(format!(
            "INSERT INTO claims (scope, kind, value, owner_kind, owner_id) VALUES {}",
            tuples(marks, held.len(), 5)
        ));
        for (key, holder) in held {
            insert = insert
                .text(&key.scope)
                .text(&key.kind)
                .text(&key.value)
                .text(&holder.kind)
                .text(&holder.id);
        }
        statements.push(insert);
    }
    statements
}

const SECRET_KEY: &[&str] = &["owner_kind", "owner_id", "kind"];

/// Upserts or deletes each secret: deletes every touched key, then inserts the values.
pub(super) fn write_secrets(
    marks: Marks,
    secrets: &[SecretState],
    updated_at: i64,
) -> Vec<Statement<'_>> {
    let mut statements = Vec::new();
    for chunk in secrets.chunks(KEY_CHUNK) {
        let mut delete = Statement::new(format!(
            "DELETE FROM secrets WHERE {}",
            any_key(marks, SECRET_KEY, chunk.len())
        ));
        for s in chunk {
            delete = delete.text(&s.owner.kind).text(&s.owner.id).text(&s.kind);
        }
        statements.push(delete);
        let values: Vec<_> = chunk
            .iter()
            .filter_map(|s| s.value.as_ref().map(|v| (s, v)))
            .collect();
        if values.is_empty() {
            continue;
        }
        let mut insert = Statement::new(format!(
            "INSERT INTO secrets (owner_kind, owner_id, kind, value, updated_at) VALUES {}",
            tuples(marks, values.len(), 5)
        ));
        for (s, value) in values {
            insert = insert
                .text(&s.owner.kind)
                .text(&s.owner.id)
                .text(&s.kind)
                .text(value)
                .int(updated_at);
        }
        statements.push(insert);
    }
    statements
}

/// Tells followers on other nodes (PostgreSQL only). Sent after commit: a NOTIFY inside the
/// append transaction would take a database-wide lock at commit.
pub(super) async fn notify(pool: &AnyPool, channel: &str, position: u64) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(position.to_string())
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_of_first_use() {
        assert_eq!(tuples(Marks::Numbered, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(
            any_key(Marks::Numbered, &["a", "b"], 2),
            "(a, b) IN (VALUES ($1, $2), ($3, $4))"
        );
    }

    /// Anonymous marks bind in order of appearance, so they must stand exactly where the
    /// numbered ones stand, in the same order.
    #[test]
    fn anonymous_placeholders_stand_where_the_numbered_ones_do() {
        assert_eq!(tuples(Marks::Anonymous, 2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(
            any_key(Marks::Anonymous, &["a", "b"], 2),
            "(a, b) IN (VALUES (?, ?), (?, ?))"
        );
    }
}
