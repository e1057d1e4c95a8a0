//! Instants are kept to the microsecond: both backends store exactly that.

use time::OffsetDateTime;

/// `t` without its sub-microsecond part.
pub fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

/// Microseconds since the Unix epoch (UTC), as stored.
pub fn to_micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// `t` as RFC 3339 text, as answers and audit details show instants (empty if `t` cannot be
/// written so, which no stored instant is).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The instant `micros` microseconds after the Unix epoch, in UTC.
pub fn from_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
