//! Wall-clock instants as milliseconds since the Unix epoch, read and
//! written as RFC 3339 by the `time` crate.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// An instant, in milliseconds since the Unix epoch (UTC).
///
/// Serialises as an RFC 3339 string in UTC with milliseconds
/// (`2026-11-28T08:04:02.123Z`). Times a store accepts lie between
/// [`Timestamp::MIN`] and [`Timestamp::MAX`], the years RFC 3339 can write.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// `0000-01-01T00:00:00.000Z`.
    pub const MIN: Timestamp = Timestamp(-62_167_219_200_000);
    /// `9999-12-31T23:59:59.999Z`.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// Now, from the system clock.
    #[must_use]
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// From milliseconds since the Unix epoch.
    #[must_use]
    pub const fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// This instant plus `d` (saturating).
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// Whether RFC 3339 can write this instant (years 0 to 9999).
    #[must_use]
    pub const fn is_in_range(self) -> bool {
        self.0 >= Self::MIN.0 && self.0 <= Self::MAX.0
    }

    /// Parses RFC 3339 (`2027-01-01T00:00:00Z`, `2027-01-01T09:00:00.5+09:00`):
    /// the offset is honoured exactly; digits past the millisecond are dropped.
    ///
    /// # Errors
    /// When `s` is not an RFC 3339 instant.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let t = OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))?;
        let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
        let ts = Timestamp(i64::try_from(ms).map_err(|_| format!("{s:?} is out of range"))?);
        if ts.is_in_range() {
            Ok(ts)
        } else {
            Err(format!("{s:?} is out of range"))
        }
    }

    fn to_datetime(self) -> Option<OffsetDateTime> {
        if !self.is_in_range() {
            return None;
        }
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        let d = Duration::from_millis(t.0.unsigned_abs());
        if t.0 >= 0 {
            UNIX_EPOCH.checked_add(d)
        } else {
            UNIX_EPOCH.checked_sub(d)
        }
        .unwrap_or(UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        match self.to_datetime().and_then(|t| t.format(&format).ok()) {
            Some(text) => f.write_str(&text),
            // Never stored (every input is checked); shown without panicking.
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An RFC 3339 string in UTC, to the millisecond.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::from_unix_millis(1_795_853_042_123);
        let s = t.to_string();
        assert_eq!(s, "2026-11-28T08:04:02.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&s).unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn offsets_are_honoured_with_and_without_fractions() {
        let utc = Timestamp::parse_rfc3339("2027-01-01T00:00:00.500Z").unwrap();
        for tokyo in [
            "2027-01-01T09:00:00.500+09:00",
            "2027-01-01T09:00:00.500123+09:00",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(tokyo).unwrap(), utc, "{tokyo}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2026-12-31T19:00:00-05:00").unwrap(),
            Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap()
        );
        // No offset is not RFC 3339: a local time means nothing to a store.
        assert!(Timestamp::parse_rfc3339("2027-01-01T00:00:00").is_err());
    }

    #[test]
    fn the_ends_of_the_range_and_beyond() {
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::MIN.to_string(), "0000-01-01T00:00:00.000Z");
        for ms in [
            i64::MAX,
            i64::MIN,
            Timestamp::MAX.0 + 1,
            Timestamp::MIN.0 - 1,
        ] {
            let t = Timestamp::from_unix_millis(ms);
            assert!(!t.is_in_range());
            assert_eq!(t.to_string(), format!("@{ms}ms"));
        }
        assert!(Timestamp::from_unix_millis(i64::MAX).plus(Duration::MAX).0 == i64::MAX);
    }
}
