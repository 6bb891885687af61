//! A real OpenID Connect provider (npm oidc-provider) for tests. (Being written.)
