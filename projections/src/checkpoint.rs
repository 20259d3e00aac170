//! One row per projection: the position of the last event folded into it.

use sqlx::{AnyConnection, Row};

use crate::error::ProjectionError;

pub async fn migrate(conn: &mut AnyConnection) -> Result<(), ProjectionError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS projection_checkpoints (\
            name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn ensure(conn: &mut AnyConnection, name: &str) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn read(conn: &mut AnyConnection, name: &str) -> Result<u64, ProjectionError> {
    let row = sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => to_u64(row.try_get::<i64, _>(0)?),
        None => 0,
    })
}

/// Every projection's checkpoint, by name.
pub async fn read_all(
    conn: &mut AnyConnection,
) -> Result<std::collections::HashMap<String, u64>, ProjectionError> {
    let rows = sqlx::query("SELECT name, position FROM projection_checkpoints")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>(0)?,
                to_u64(row.try_get::<i64, _>(1)?),
            ))
        })
        .collect()
}

/// Moves every `(name, from)` checkpoint to `to`, all or none. Returns false when another
/// runner (another node, or a rebuild) moved any of them first: the caller must roll back and
/// read them again. This is what keeps two nodes from folding the same event twice.
/// Checkpoints at the same `from` move in one statement.
pub async fn advance(
    conn: &mut AnyConnection,
    checkpoints: &[(&str, u64)],
    to: u64,
) -> Result<bool, ProjectionError> {
    let mut froms: Vec<u64> = checkpoints.iter().map(|(_, from)| *from).collect();
    froms.sort_unstable();
    froms.dedup();
    for from in froms {
        let names: Vec<&str> = checkpoints
            .iter()
            .filter(|(_, at)| *at == from)
            .map(|(name, _)| *name)
            .collect();
        let placeholders = (0..names.len())
            .map(|i| format!("${}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE projection_checkpoints SET position = $1 \
             WHERE position = $2 AND name IN ({placeholders})"
        );
        let mut query = sqlx::query(&sql).bind(to_i64(to)).bind(to_i64(from));
        for name in &names {
            query = query.bind(*name);
        }
        let done = query.execute(&mut *conn).await?;
        if done.rows_affected() != names.len() as u64 {
            return Ok(false);
        }
    }
    Ok(true)
}

pub async fn reset(conn: &mut AnyConnection, name: &str) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE projection_checkpoints SET position = 0 WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
