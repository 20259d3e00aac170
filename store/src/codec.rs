//! Conversions between Rust values and the column types both backends share: 64-bit integers,
//! TEXT and bytes. A stored value that does not convert back is [`StoreError::Corrupt`].

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::error::StoreError;

/// Times are stored as microseconds since the Unix epoch. chrono's range (±262,000 years)
/// fits in an i64 of microseconds, so this cannot overflow.
pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(crate) fn time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("time {micros} µs is out of range")))
}

/// Drops the sub-microsecond part, so a time survives a round trip through the database.
pub(crate) fn truncate_to_micros(time: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
    self::time(micros(time))
}

/// Unsigned counters are stored as i64; PostgreSQL has no unsigned type.
pub(crate) fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} does not fit in i64")))
}

pub(crate) fn get_u64(row: &AnyRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} is negative: {value}")))
}

pub(crate) fn get_u32(row: &AnyRow, column: &str) -> Result<u32, StoreError> {
    let value: i64 = row.try_get(column)?;
    u32::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{column} is out of range: {value}")))
}

pub(crate) fn get_time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    time(row.try_get(column)?)
}

pub(crate) fn get_uuid(row: &AnyRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text)
        .map_err(|_| StoreError::Corrupt(format!("{column} is not a uuid: {text:?}")))
}

pub(crate) fn get_hash(row: &AnyRow, column: &str) -> Result<[u8; 32], StoreError> {
    let bytes: Vec<u8> = row.try_get(column)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("{column} is {} bytes, not 32", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_microseconds_only() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let truncated = truncate_to_micros(t).unwrap();
        assert_eq!(truncated.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(time(micros(truncated)).unwrap(), truncated);
    }

    #[test]
    fn counters_beyond_i64_are_refused() {
        assert!(to_i64(u64::MAX).is_err());
        assert_eq!(to_i64(7).unwrap(), 7);
    }
}
