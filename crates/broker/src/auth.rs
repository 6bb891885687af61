//! Who is calling: bearer tokens from trusted issuers, verified (issuer,
//! audience, signature, expiry) and mapped to a [`Principal`].

use std::path::Path;

use hourglass_core::Principal;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::error::{Error, Result};

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Tolerated clock difference with the issuer.
const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no bearer token: send `Authorization: Bearer <token>` (log in with `hourglass login`, or in dev mode use a token `hourglassd dev` printed)"
    )]
    Missing,
    #[error("the bearer token is malformed")]
    Malformed,
    #[error("the bearer token has expired; log in again")]
    Expired,
    #[error("the bearer token's issuer is not trusted by this broker")]
    UntrustedIssuer,
    #[error("the bearer token was issued for another audience")]
    WrongAudience,
    #[error("the bearer token's signature does not verify")]
    BadSignature,
    #[error("the bearer token names no principal (claim `{0}` is missing)")]
    NoPrincipal(String),
}

pub struct VerificationKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// An identity provider whose tokens the broker accepts.
pub struct TrustedIssuer {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<VerificationKey>,
    /// The claim that identifies the principal (falls back to `sub`).
    pub id_claim: String,
    pub groups_claim: String,
}

impl TrustedIssuer {
    /// An issuer whose keys are in a JWKS file (RFC 7517).
    pub fn from_jwks_file(
        issuer: String,
        audience: String,
        path: &Path,
        id_claim: String,
        groups_claim: String,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading JWKS {}", path.display())))?;
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|error| Error::Config(format!("{} is not a JWKS document: {error}", path.display())))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|error| Error::Config(format!("{}: unusable key: {error}", path.display())))?;
            let algorithm =
                jwk.common.key_algorithm.and_then(|alg| alg.to_string().parse().ok()).unwrap_or(Algorithm::RS256);
            keys.push(VerificationKey { kid: jwk.common.key_id.clone(), key, algorithm });
        }
        Ok(TrustedIssuer { issuer, audience, keys, id_claim, groups_claim })
    }
}

#[derive(Default)]
pub struct Authenticator {
    issuers: Vec<TrustedIssuer>,
}

impl Authenticator {
    pub fn trust(mut self, issuer: TrustedIssuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|issuer| issuer.issuer.as_str())
    }

    /// Verifies a bearer token and returns the principal it names.
    pub fn verify(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        // Only to pick the issuer; the claims are trusted after verification below.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(token).map_err(|_| AuthError::Malformed)?;
        let issuer_name = unverified.claims["iss"].as_str().ok_or(AuthError::Malformed)?;
        let issuer = self.issuers.iter().find(|i| i.issuer == issuer_name).ok_or(AuthError::UntrustedIssuer)?;
        let candidates = issuer
            .keys
            .iter()
            .filter(|key| key.algorithm == header.alg && (header.kid.is_none() || key.kid == header.kid));
        let mut last = AuthError::BadSignature;
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.set_issuer(&[&issuer.issuer]);
            validation.set_audience(&[&issuer.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = LEEWAY_SECONDS;
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return principal_from(&data.claims, issuer),
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match error.kind() {
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::InvalidAudience => AuthError::WrongAudience,
                        ErrorKind::InvalidIssuer => AuthError::UntrustedIssuer,
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        _ => AuthError::Malformed,
                    };
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn principal_from(claims: &Value, issuer: &TrustedIssuer) -> std::result::Result<Principal, AuthError> {
    let id = claims[issuer.id_claim.as_str()]
        .as_str()
        .or_else(|| claims["sub"].as_str())
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| AuthError::NoPrincipal(issuer.id_claim.clone()))?;
    let groups = match &claims[issuer.groups_claim.as_str()] {
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Value::String(one) => std::iter::once(one.clone()).collect(),
        _ => Default::default(),
    };
    Ok(Principal { id: id.to_ascii_lowercase(), name: claims["name"].as_str().map(str::to_owned), groups })
}
