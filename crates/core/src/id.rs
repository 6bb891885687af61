//! Identifiers people type: `req-7k2m9x4q3t` and `grt-7k2m9x4q3t`.
//!
//! Short enough to read out on a call, prefixed so a grant id passed where a
//! request id belongs gets a precise error. The randomness comes from the
//! caller: this crate does no I/O.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Crockford's base32 alphabet in lower case: no i, l, o or u to misread.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const BODY_LEN: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("\"{text}\" is a {found} id, not a {expected} id")]
    WrongKind { text: String, found: &'static str, expected: &'static str },
    #[error("\"{text}\" is not a {expected} id (they look like {example})")]
    Malformed { text: String, expected: &'static str, example: &'static str },
}

macro_rules! id_type {
    ($name:ident, $prefix:literal, $noun:literal, $example:literal) => {
        #[doc = concat!("Identifies a ", $noun, ", e.g. `", $example, "`.")]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(type = "string"))]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Builds an id from 50 random bits (the low 50 of `random`).
            pub fn from_random(random: u64) -> Self {
                $name(format!("{}{}", $prefix, encode(random)))
            }

            pub fn parse(text: &str) -> Result<Self, IdError> {
                let text = text.trim();
                if let Some(body) = text.strip_prefix($prefix) {
                    if is_body(body) {
                        return Ok($name(text.to_owned()));
                    }
                } else if let Some(found) = kind_of(text) {
                    return Err(IdError::WrongKind { text: text.to_owned(), found, expected: $noun });
                }
                Err(IdError::Malformed { text: text.to_owned(), expected: $noun, example: $example })
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9a-z]{10}$")))
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

id_type!(RequestId, "req-", "request", "req-7k2m9x4q3t");
id_type!(GrantId, "grt-", "grant", "grt-7k2m9x4q3t");

fn encode(mut random: u64) -> String {
    let mut body = String::with_capacity(BODY_LEN);
    for _ in 0..BODY_LEN {
        body.push(char::from(ALPHABET[(random & 31) as usize]));
        random >>= 5;
    }
    body
}

fn is_body(body: &str) -> bool {
    body.len() == BODY_LEN && body.bytes().all(|b| ALPHABET.contains(&b))
}

fn kind_of(text: &str) -> Option<&'static str> {
    if text.starts_with(RequestId::PREFIX) {
        Some("request")
    } else if text.starts_with(GrantId::PREFIX) {
        Some("grant")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = RequestId::from_random(0x3ff_ffff_ffff_1234);
        assert!(id.as_str().starts_with("req-") && id.as_str().len() == 14, "{id}");
        assert_eq!(RequestId::parse(id.as_str()), Ok(id.clone()));
    }

    #[test]
    fn a_grant_id_where_a_request_id_belongs_is_named() {
        let grant = GrantId::from_random(42);
        let error = RequestId::parse(grant.as_str()).expect_err("wrong kind");
        assert_eq!(error.to_string(), format!("\"{grant}\" is a grant id, not a request id"));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for text in ["", "req-", "req-short", "req-UPPERCASE1", "req-0123456789a", "42"] {
            let error = RequestId::parse(text).expect_err(text).to_string();
            assert!(error.contains("is not a request id"), "{text:?}: {error}");
        }
    }
}
