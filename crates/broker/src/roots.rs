//! What the broker's own TLS clients (to PostgreSQL, to a SIEM) trust:
//! the certificates of a CA file, or the system's roots; the one way its
//! HTTP clients are built; and where plain text may go (this machine only).
//! Below every other file: it names none.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration as StdDuration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why the roots a client trusts could not be had.
#[derive(Debug)]
pub enum RootsError {
    Unreadable(std::io::ErrorKind),
    Invalid(String),
    NoCertificate,
    NoSystemRoots,
}

/// Whether `host` (a name, an address, a bracketed IPv6 address) is this
/// machine: where plain HTTP or SMTP cannot be read on the way.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The rule for every URL the broker sends to (identity providers, chat,
/// webhooks, SIEM, AWS): `https://`, or plain `http://` to this machine.
pub fn is_https_or_loopback(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host_str().is_some_and(is_loopback_host),
        _ => false,
    }
}

/// The broker's HTTP client for its calls out: ring as rustls's crypto
/// provider (reqwest is built without one; installing it again is a no-op),
/// five seconds to connect, `total` for a whole call, the broker's user
/// agent, and redirects followed only when `follow_redirects` (an answer
/// that carries a secret or a decision must come from the URL configured).
pub fn http_client(total: StdDuration, follow_redirects: bool) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redirects =
        if follow_redirects { reqwest::redirect::Policy::default() } else { reqwest::redirect::Policy::none() };
    reqwest::Client::builder()
        .connect_timeout(StdDuration::from_secs(5))
        .timeout(total)
        .redirect(redirects)
        .user_agent(concat!("hourglassd/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The roots a client of the broker's (to PostgreSQL, to a SIEM) trusts:
/// the certificates of a PEM file, or the system's.
pub fn trusted_roots(file: Option<&Path>) -> std::result::Result<rustls::RootCertStore, RootsError> {
    let mut store = rustls::RootCertStore::empty();
    match file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|error| RootsError::Unreadable(error.kind()))?;
            let mut found = 0;
            for certificate in CertificateDer::pem_slice_iter(&pem).filter_map(std::result::Result::ok) {
                store.add(certificate).map_err(|error| RootsError::Invalid(error.to_string()))?;
                found += 1;
            }
            if found == 0 {
                return Err(RootsError::NoCertificate);
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(RootsError::NoSystemRoots);
            }
        }
    }
    Ok(store)
}

#[cfg(test)]
mod plain_text_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::is_https_or_loopback;

    #[test]
    fn plain_http_goes_to_this_machine_only() {
        let cases = [
            ("https://hooks.slack.example/x", true, "TLS anywhere"),
            ("http://127.0.0.1:8080/", true, "IPv4 loopback"),
            ("http://127.0.0.2/", true, "all of 127/8 is this machine"),
            ("http://[::1]:5000/", true, "IPv6 loopback"),
            ("http://localhost/", true, "the loopback name"),
            ("http://sts.amazonaws.com/", false, "plain text off this machine"),
            ("http://127.0.0.1.evil.example/", false, "a look-alike name"),
            ("ftp://127.0.0.1/", false, "neither scheme"),
        ];
        for (url, allowed, why) in cases {
            let url = reqwest::Url::parse(url).expect("a URL");
            assert_eq!(is_https_or_loopback(&url), allowed, "{why}: {url}");
        }
    }
}
