use keyledger_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position} cannot be folded: {reason}")]
    Malformed { position: u64, reason: String },
    #[error("a command from the delivery worker failed: {0}")]
    Command(String),
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    #[error("a fold running on its own task did not finish: {0}")]
    FoldTask(String),
}
