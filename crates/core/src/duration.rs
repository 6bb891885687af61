//! Durations as people write them in requests and policy: `5s`, `15m`,
//! `1h30m`, `2d`.
//!
//! A strict little grammar of our own rather than a general-purpose parser:
//! access durations are always whole seconds, a bare number is refused (is
//! `30` seconds or minutes?), and every error names the text it could not read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time in whole seconds, written `1h30m` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(type = "string"))]
pub struct Duration(u64);

/// Longest duration we accept anywhere: a year. Keeps every deadline far from
/// timestamp overflow, whatever a policy says.
pub const MAX_SECONDS: u64 = 366 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: write it like 30s, 15m, 1h30m or 2d")]
    Empty,
    #[error("\"{text}\" has a number without a unit: add s, m, h or d (e.g. {example})")]
    MissingUnit { text: String, example: String },
    #[error("\"{text}\" has an unknown unit \"{unit}\": use s, m, h or d")]
    UnknownUnit { text: String, unit: String },
    #[error("\"{text}\" is not a duration: write it like 30s, 15m, 1h30m or 2d")]
    Malformed { text: String },
    #[error("\"{text}\" is longer than the longest allowed duration (366d)")]
    TooLong { text: String },
}

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs)
    }

    pub const fn from_mins(mins: u64) -> Self {
        Duration(mins * 60)
    }

    pub const fn from_hours(hours: u64) -> Self {
        Duration(hours * 3600)
    }

    pub const fn as_secs(self) -> u64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }

    pub fn saturating_add(self, other: Duration) -> Duration {
        Duration(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Duration) -> Duration {
        Duration(self.0.saturating_sub(other.0))
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(DurationError::Empty);
        }
        if trimmed.contains(char::is_whitespace) {
            return Err(DurationError::Malformed { text: trimmed.to_owned() });
        }
        let mut total: u64 = 0;
        let mut rest = trimmed;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(DurationError::Malformed { text: trimmed.to_owned() });
            }
            let (number, after) = rest.split_at(digits);
            let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, after) = after.split_at(unit_len);
            let scale = match unit {
                "" if !after.is_empty() => {
                    return Err(DurationError::Malformed { text: trimmed.to_owned() });
                }
                "" => {
                    return Err(DurationError::MissingUnit { text: trimmed.to_owned(), example: format!("{number}m") });
                }
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                other => {
                    return Err(DurationError::UnknownUnit { text: trimmed.to_owned(), unit: other.to_owned() });
                }
            };
            let too_long = || DurationError::TooLong { text: trimmed.to_owned() };
            let value: u64 = number.parse().map_err(|_| too_long())?;
            total = value.checked_mul(scale).and_then(|part| total.checked_add(part)).ok_or_else(too_long)?;
            rest = after;
        }
        if total > MAX_SECONDS {
            return Err(DurationError::TooLong { text: trimmed.to_owned() });
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// Canonical form: largest units first, zero parts left out (`1h30m`, `0s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Duration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^([0-9]+[smhd])+$"))
            .description(Some("A duration such as 30s, 15m, 1h30m or 2d"))
            .examples([serde_json::json!("1h30m")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Duration {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_combination() {
        let cases = [
            ("5s", 5),
            ("15m", 900),
            ("1h", 3600),
            ("2d", 172_800),
            ("1h30m", 5400),
            ("1d2h3m4s", 93_784),
            (" 90s ", 90),
            ("0s", 0),
        ];
        for (text, secs) in cases {
            assert_eq!(text.parse::<Duration>(), Ok(Duration(secs)), "parsing {text:?}");
        }
    }

    #[test]
    fn malformed_durations_are_refused_with_the_text_named() {
        let cases = [
            ("", "empty duration"),
            ("30", "\"30\" has a number without a unit"),
            ("1h30", "\"1h30\" has a number without a unit"),
            ("5x", "unknown unit \"x\""),
            ("5 min", "\"5 min\" is not a duration"),
            ("-5m", "\"-5m\" is not a duration"),
            ("1.5h", "\"1.5h\" is not a duration"),
            ("h", "\"h\" is not a duration"),
            ("367d", "longer than the longest allowed"),
            ("99999999999999999999s", "longer than the longest allowed"),
        ];
        for (text, expected) in cases {
            let error = text.parse::<Duration>().expect_err(text).to_string();
            assert!(error.contains(expected), "error for {text:?} was {error:?}");
        }
    }

    #[test]
    fn durations_display_canonically_and_round_trip() {
        for (secs, text) in [(0, "0s"), (5, "5s"), (5400, "1h30m"), (86_401, "1d1s")] {
            let duration = Duration(secs);
            assert_eq!(duration.to_string(), text);
            assert_eq!(text.parse::<Duration>(), Ok(duration), "round trip of {text}");
        }
    }

    mod properties {
        //! Property tests: every text is read or refused with a message, never
        //! a panic; every duration round-trips through its canonical form.
        //! A fixed seed keeps CI deterministic (`PROPTEST_RNG_SEED=n` explores
        //! others; `PROPTEST_CASES=n` runs more), and no regression files are
        //! written: a failure found is pinned as a named test above.

        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        use super::super::*;

        fn config() -> Config {
            let default = Config::default();
            Config {
                failure_persistence: None,
                rng_seed: match default.rng_seed {
                    RngSeed::Random => RngSeed::Fixed(0x686f_7572_676c_6173),
                    chosen => chosen,
                },
                ..default
            }
        }

        /// Text near the grammar: digits, units, their capitals, signs, dots
        /// and spaces, so that most cases reach deep into the parser.
        fn near_durations() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    4 => "[0-9]{1,3}",
                    1 => "[0-9]{15,25}",
                    3 => "[smhd]",
                    1 => "[SMHDxyµ٣ .+\\-_\t\n]",
                ],
                0..8,
            )
            .prop_map(|parts| parts.concat())
        }

        /// A duration written as parts in any order, e.g. `30m1h`: the sum of
        /// its parts as exact seconds (u128: no overflow in the oracle).
        fn parts() -> impl Strategy<Value = (String, u128)> {
            let unit = prop_oneof![Just(("s", 1u128)), Just(("m", 60)), Just(("h", 3600)), Just(("d", 86_400))];
            proptest::collection::vec((0u64..=400_000, unit), 1..5).prop_map(|parts| {
                let text = parts.iter().map(|(n, (unit, _))| format!("{n}{unit}")).collect::<String>();
                let secs = parts.iter().map(|(n, (_, scale))| u128::from(*n) * scale).sum();
                (text, secs)
            })
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn duration_parse_never_panics_and_names_what_it_refuses(
                text in prop_oneof![any::<String>(), near_durations()],
            ) {
                match text.parse::<Duration>() {
                    Ok(duration) => {
                        prop_assert!(duration.as_secs() <= MAX_SECONDS, "{text:?} read as {duration}, past the cap");
                        prop_assert_eq!(duration.to_string().parse::<Duration>(), Ok(duration), "canonical form of {:?}", text);
                    }
                    Err(DurationError::Empty) => prop_assert!(text.trim().is_empty(), "{:?} called empty", text),
                    Err(error) => {
                        let message = error.to_string();
                        prop_assert!(message.contains(text.trim()), "the error for {text:?} names it: {message}");
                    }
                }
            }

            #[test]
            fn duration_parse_roundtrips_and_refuses_garbage(
                secs in 0..=MAX_SECONDS,
                garbage in "[^0-9smhd \t\n\r\u{b}\u{c}\u{85}\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}]",
                at in any::<prop::sample::Index>(),
            ) {
                let duration = Duration::from_secs(secs);
                let text = duration.to_string();
                prop_assert_eq!(text.parse::<Duration>(), Ok(duration), "Display then parse of {} s", secs);
                prop_assert_eq!(serde_json::to_string(&duration).ok().and_then(|json| serde_json::from_str(&json).ok()), Some(duration));
                // One character outside the grammar, anywhere, and it is refused.
                let mut broken = text.clone();
                let at = at.index(broken.len() + 1);
                broken.insert_str(at, &garbage);
                prop_assert!(broken.parse::<Duration>().is_err(), "{broken:?} refused");
            }

            #[test]
            fn duration_parts_sum_or_overflow_is_refused_as_too_long((text, secs) in parts()) {
                match text.parse::<Duration>() {
                    Ok(duration) => {
                        prop_assert!(secs <= u128::from(MAX_SECONDS), "{text} is over the cap yet read");
                        prop_assert_eq!(u128::from(duration.as_secs()), secs, "{} is the sum of its parts", text);
                    }
                    Err(error) => {
                        prop_assert!(secs > u128::from(MAX_SECONDS), "{text} is within the cap yet refused: {error}");
                        prop_assert_eq!(&error, &DurationError::TooLong { text: text.clone() });
                        prop_assert!(error.to_string().contains("longest allowed duration (366d)"), "{error}");
                    }
                }
            }

            #[test]
            fn duration_numbers_past_u64_are_refused_as_too_long(digits in "[1-9][0-9]{19,40}", unit in "[smhd]") {
                let text = format!("{digits}{unit}");
                prop_assert_eq!(text.parse::<Duration>(), Err(DurationError::TooLong { text: text.clone() }));
            }
        }
    }

    #[test]
    fn durations_serialize_as_strings() {
        let json = serde_json::to_string(&Duration::from_mins(90)).expect("serialize");
        assert_eq!(json, "\"1h30m\"");
        let back: Duration = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, Duration::from_mins(90));
        let error = serde_json::from_str::<Duration>("\"ten minutes\"").expect_err("refused");
        assert!(error.to_string().contains("not a duration"), "{error}");
    }
}
