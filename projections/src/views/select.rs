//! A SELECT built from only the filters a request gives, so the planner sees plain equalities
//! and ranges it can serve from an index (an `(? IS NULL OR col = ?)` filter hides them).

use keyledger_store::{Backend, Database};
use sqlx::any::AnyRow;

use crate::error::ProjectionError;

pub(crate) enum Param {
    Text(String),
    Int(i64),
}

pub(crate) struct Select {
    sql: String,
    params: Vec<Param>,
    backend: Backend,
    conditions: usize,
}

impl Select {
    /// `head` is the statement up to `WHERE` (excluded), without parameters of its own.
    pub(crate) fn new(db: &Database, head: &str) -> Self {
        Self {
            sql: head.to_owned(),
            params: Vec::new(),
            backend: db.backend(),
            conditions: 0,
        }
    }

    /// Adds a condition, where each `?` takes the next of `params`.
    pub(crate) fn and(&mut self, condition: &str, params: impl IntoIterator<Item = Param>) {
        self.sql.push_str(if self.conditions == 0 {
            " WHERE "
        } else {
            " AND "
        });
        self.conditions += 1;
        self.push(condition, params);
    }

    /// Appends `tail` verbatim (ORDER BY, LIMIT), with its `?` markers taking `params`.
    pub(crate) fn then(&mut self, tail: &str, params: impl IntoIterator<Item = Param>) {
        self.sql.push(' ');
        self.push(tail, params);
    }

    fn push(&mut self, text: &str, params: impl IntoIterator<Item = Param>) {
        for (i, piece) in text.split('?').enumerate() {
            if i > 0 {
                self.params.push(Param::Int(0)); // reserve the slot; replaced just below
                match self.backend {
                    // Anonymous on SQLite: named `$N` bind in quadratic time there.
                    Backend::Sqlite => self.sql.push('?'),
                    Backend::Postgres => {
                        let n = self.params.len();
                        self.sql.push_str(&format!("${n}"));
                    }
                }
            }
            self.sql.push_str(piece);
        }
        let markers = text.matches('?').count();
        let first = self.params.len() - markers;
        let mut given = 0;
        for (slot, param) in self.params[first..].iter_mut().zip(params) {
            *slot = param;
            given += 1;
        }
        debug_assert_eq!(given, markers, "one parameter per marker in {text:?}");
    }

    pub(crate) async fn fetch_all(self, db: &Database) -> Result<Vec<AnyRow>, ProjectionError> {
        let mut query = sqlx::query(&self.sql);
        for param in self.params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
            };
        }
        Ok(query.fetch_all(db.pool()).await?)
    }
}
