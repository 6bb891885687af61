//! A token issuer the broker trusts through a JWKS file: signs ID tokens
//! for any principal, so tests and benchmarks can act as many people
//! without an identity provider's login flow.

use std::path::Path;

use base64::Engine;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

pub const ISSUER: &str = "https://idp.acme.example";

pub struct JwtIssuer {
    key: SigningKey,
    kid: String,
    encoding: EncodingKey,
}

impl JwtIssuer {
    /// A fresh key named `kid`.
    pub fn new(kid: &str) -> JwtIssuer {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let der = key.to_pkcs8_der().expect("PKCS#8 encoding of a fresh key");
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        JwtIssuer { key, kid: kid.to_owned(), encoding }
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> String {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes());
        serde_json::json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig" }] })
            .to_string()
    }

    /// An ID token for `email` in `groups`, for `audience`, valid for
    /// `lifetime_secs` from now (negative: already expired).
    pub fn token(&self, email: &str, groups: &[&str], audience: &str, lifetime_secs: i64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let claims = serde_json::json!({
            "iss": ISSUER, "aud": audience, "sub": format!("id-{email}"), "email": email, "email_verified": true,
            "groups": groups, "iat": now, "exp": now + lifetime_secs,
        });
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, &claims, &self.encoding).expect("signing a token")
    }

    /// Makes `dir` (a policy directory) trust this issuer: writes its JWKS
    /// next to the policy and prepends a `[broker]` table naming it, with
    /// the store in `dir/data`.
    pub fn trust_in(&self, dir: &Path) {
        let file = dir.join("hourglass.toml");
        let toml = std::fs::read_to_string(&file).unwrap_or_default();
        let broker = format!(
            "[broker]\ndata_dir = \"data\"\n\n[[broker.issuers]]\nissuer = \"{ISSUER}\"\njwks_file = \"idp-jwks.json\"\n\n"
        );
        std::fs::write(&file, broker + &toml).expect("writing hourglass.toml");
        std::fs::write(dir.join("idp-jwks.json"), self.jwks()).expect("writing the JWKS");
    }
}
