//! Points in time. The broker's clock is the reference: logic in this crate
//! never reads a clock, callers pass `now` in.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Duration;

/// A UTC instant with millisecond precision, RFC 3339 on the wire
/// (`2026-11-23T14:32:00.000Z`). Milliseconds keep the store's integer
/// columns and the JSON form exactly equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(type = "string"))]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an RFC 3339 timestamp")]
pub struct TimestampError(String);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn from_offset_date_time(at: OffsetDateTime) -> Self {
        let millis = at.unix_timestamp_nanos() / 1_000_000;
        Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
    }

    pub fn to_offset_date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        OffsetDateTime::parse(text, &Rfc3339)
            .map(Self::from_offset_date_time)
            .map_err(|_| TimestampError(text.to_owned()))
    }

    pub fn plus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_secs().saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    pub fn minus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_secs().saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }

    pub fn plus_millis(self, millis: i64) -> Self {
        Timestamp(self.0.saturating_add(millis))
    }

    /// Whole milliseconds from `self` until `later`; negative if `later` is earlier.
    pub fn millis_until(self, later: Timestamp) -> i64 {
        later.0.saturating_sub(self.0)
    }

    /// The time from `self` until `later`, rounded down to whole seconds, zero
    /// if `later` has passed.
    pub fn until(self, later: Timestamp) -> Duration {
        let millis = self.millis_until(later).max(0);
        Duration::from_secs(u64::try_from(millis / 1000).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.to_offset_date_time();
        // RFC 3339 with exactly three fractional digits and a Z, the one form
        // we emit so that stored and exported text is byte-stable.
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime)))
            .description(Some("RFC 3339 UTC timestamp, millisecond precision"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_utc_with_millis() {
        let at = Timestamp::from_unix_millis(1_795_000_000_123);
        assert_eq!(at.to_string(), "2026-11-18T11:06:40.123Z");
        assert_eq!(Timestamp::parse(&at.to_string()), Ok(at), "round trip");
    }

    #[test]
    fn timestamps_parse_offsets_into_utc() {
        let at = Timestamp::parse("2026-11-18T10:26:40+02:00").expect("parse");
        assert_eq!(at.to_string(), "2026-11-18T08:26:40.000Z");
        assert!(Timestamp::parse("yesterday").is_err(), "free text refused");
    }

    #[test]
    fn time_until_a_passed_instant_is_zero() {
        let now = Timestamp::from_unix_millis(10_000);
        assert_eq!(now.until(now.plus(Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(now.until(Timestamp::from_unix_millis(9_000)), Duration::ZERO);
        assert_eq!(now.millis_until(Timestamp::from_unix_millis(9_000)), -1000);
    }
}
