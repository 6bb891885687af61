//! Logging in against a real OpenID Connect provider. (Being written.)
