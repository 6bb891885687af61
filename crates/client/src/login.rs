//! Logging in: OpenID Connect Authorization Code with PKCE through the system
//! browser, or the device grant. (Being written: issue 4.)
