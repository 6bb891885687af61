//! The session: a broker session token, kept in the OS keyring with the
//! refresh token that renews it. (Being written: issue 4.)
