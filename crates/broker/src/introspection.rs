//! Token introspection (RFC 7662): a grant token is active while its
//! signature verifies, its `exp` has not passed, and its grant is active.

use hourglass_core::GrantId;
use jsonwebtoken::{Algorithm, Validation};
use serde::Serialize;

use crate::broker::Broker;
use crate::error::Result;
use crate::provider::token::GrantClaims;

/// An RFC 7662 answer. Inactive tokens get `{"active": false}` and nothing
/// else, as the RFC advises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The granted role, as the OAuth `scope`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

impl Introspection {
    fn inactive() -> Self {
        Introspection {
            active: false,
            sub: None,
            aud: None,
            iss: None,
            exp: None,
            iat: None,
            jti: None,
            scope: None,
            resource: None,
            token_type: None,
        }
    }
}

impl Broker {
    /// `audience`: the one the asking resource server answers to, if it
    /// said; a token for another is inactive to it.
    pub async fn introspect(&self, token: &str, audience: Option<&str>) -> Result<Introspection> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Compared below, when the resource server names its audience.
        validation.validate_aud = false;
        validation.leeway = 0;
        // The key that signed it, by its id: any replica's, within its overlap.
        let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|header| header.kid) else {
            return Ok(Introspection::inactive());
        };
        self.token_keys.look_up(&kid, self.now()).await;
        let key = self.token_keys.verifier(&kid, self.now());
        let Some(key) = key else { return Ok(Introspection::inactive()) };
        let Ok(data) = jsonwebtoken::decode::<GrantClaims>(token, key.decoding(), &validation) else {
            return Ok(Introspection::inactive());
        };
        let claims = data.claims;
        if audience.is_some_and(|audience| audience != claims.aud) {
            return Ok(Introspection::inactive());
        }
        let Ok(id) = GrantId::parse(&claims.jti) else { return Ok(Introspection::inactive()) };
        let Some(record) = self.store.grant(&id).await? else { return Ok(Introspection::inactive()) };
        let grant = record.grant;
        let live = grant.is_usable_at(self.now()) && grant.owner == claims.sub;
        if !live {
            return Ok(Introspection::inactive());
        }
        Ok(Introspection {
            active: true,
            sub: Some(claims.sub),
            aud: Some(claims.aud),
            iss: Some(claims.iss),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            jti: Some(claims.jti),
            scope: Some(claims.role),
            resource: Some(claims.resource),
            token_type: Some("Bearer".into()),
        })
    }
}
