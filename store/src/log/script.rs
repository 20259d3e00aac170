//! Statements built before they run, so that a backend can take several at once.
//!
//! SQLite runs each statement on its connection's own thread: every statement sent on its own
//! is a hand-off to that thread and back, two wake-ups, each of which preempts whatever else
//! the core was doing (at full login load, a password hash). SQLite takes a script of several
//! statements with their parameters in one hand-off, so the append writer's batch is two
//! hand-offs instead of five or more. PostgreSQL's extended protocol takes one statement with
//! parameters at a time, so there the statements run one by one.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use crate::database::Backend;
use crate::error::StoreError;

/// A value bound to a statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    Int(i64),
    Text(&'a str),
    OwnedText(String),
    Bytes(&'a [u8]),
}

/// One statement and its parameter values, in the order the statement uses them.
#[derive(Debug, Clone)]
pub(crate) struct Statement<'a> {
    pub sql: String,
    pub values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            values: Vec::new(),
        }
    }

    pub(crate) fn int(mut self, value: i64) -> Self {
        self.values.push(Value::Int(value));
        self
    }

    pub(crate) fn text(mut self, value: &'a str) -> Self {
        self.values.push(Value::Text(value));
        self
    }

    pub(crate) fn owned_text(mut self, value: String) -> Self {
        self.values.push(Value::OwnedText(value));
        self
    }

    pub(crate) fn bytes(mut self, value: &'a [u8]) -> Self {
        self.values.push(Value::Bytes(value));
        self
    }
}

/// How statements mark their parameters on a backend. PostgreSQL needs `$N`. SQLite gets
/// anonymous `?`, bound in order: it resolves each `$N` by a linear search of the names seen
/// so far, and sqlx's SQLite binder looks each name up again, which makes a batch's statements
/// quadratic in their parameters (a 1,000-row INSERT: 29,333 rows/s with `$N`, 235,333 with
/// `?`). Anonymous marks are also what lets statements be joined into one script: each binds
/// the next values, wherever it stands in the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marks {
    Numbered,
    Anonymous,
}

impl Marks {
    pub(crate) fn of(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Marks::Anonymous,
            Backend::Postgres => Marks::Numbered,
        }
    }

    /// Appends the mark of parameter `n` (from 1). Anonymous marks bind in order of
    /// appearance, so every statement built here uses its parameters in ascending order, once
    /// each.
    pub(crate) fn push(self, sql: &mut String, n: usize) {
        match self {
            Marks::Numbered => {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(sql, "${n}");
            }
            Marks::Anonymous => sql.push('?'),
        }
    }
}

fn bind<'q>(
    mut query: Query<'q, Any, AnyArguments<'q>>,
    values: &'q [Value<'q>],
) -> Query<'q, Any, AnyArguments<'q>> {
    for value in values {
        query = match value {
            Value::Int(v) => query.bind(*v),
            Value::Text(v) => query.bind(*v),
            Value::OwnedText(v) => query.bind(v.as_str()),
            Value::Bytes(v) => query.bind(*v),
        };
    }
    query
}

/// One statement, bound and ready to run, not kept as a prepared statement: SQLite scripts
/// differ from batch to batch.
pub(crate) fn query<'q>(statement: &'q Statement<'q>) -> Query<'q, Any, AnyArguments<'q>> {
    bind(
        sqlx::query(&statement.sql).persistent(false),
        &statement.values,
    )
}

/// One statement, prepared once per connection and kept (sqlx's statement cache, 100 per
/// connection): the append writer's PostgreSQL statements take a few shapes, one per batch
/// size, and parsing and planning a fresh 600-parameter `INSERT` or a 190-parameter snapshot
/// read on every batch cost about a fifth of the appends at 64 writers
/// (`docs/benchmarks.md`).
pub(crate) fn kept_query<'q>(statement: &'q Statement<'q>) -> Query<'q, Any, AnyArguments<'q>> {
    bind(
        sqlx::query(&statement.sql).persistent(true),
        &statement.values,
    )
}

/// Runs `statements` in order: on SQLite as one script (one hand-off), elsewhere one by one.
/// Stops at the first that fails; on SQLite the statements before it have run, so a caller
/// inside a transaction must roll it back (or drop the connection) on error.
pub(crate) async fn run(
    conn: &mut AnyConnection,
    backend: Backend,
    statements: &[Statement<'_>],
) -> Result<(), StoreError> {
    match backend {
        Backend::Sqlite => {
            let script = joined(statements);
            if !script.sql.is_empty() {
                // `execute` runs every statement of the script and fails with the first that
                // fails.
                query(&script).execute(&mut *conn).await?;
            }
        }
        Backend::Postgres => {
            for statement in statements {
                kept_query(statement).execute(&mut *conn).await?;
            }
        }
    }
    Ok(())
}

/// The statements as one script, their values in order (anonymous marks only).
pub(crate) fn joined<'a>(statements: &[Statement<'a>]) -> Statement<'a> {
    let mut script = Statement::new(String::new());
    for statement in statements {
        if !script.sql.is_empty() {
            script.sql.push_str(";\n");
        }
        script.sql.push_str(&statement.sql);
        script.values.extend(statement.values.iter().cloned());
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_keeps_each_statements_values_in_order() {
        let a = Statement::new("INSERT INTO t VALUES (?, ?)")
            .int(1)
            .text("a");
        let b = Statement::new("DELETE FROM t WHERE x = ?").int(2);
        let script = joined(&[a, b]);
        assert_eq!(
            script.sql,
            "INSERT INTO t VALUES (?, ?);\nDELETE FROM t WHERE x = ?"
        );
        let ints: Vec<_> = script
            .values
            .iter()
            .map(|v| match v {
                Value::Int(i) => i.to_string(),
                Value::Text(t) => (*t).to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(ints, ["1", "a", "2"]);
    }
}
