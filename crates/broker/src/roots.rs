//! What the broker's own TLS clients (to PostgreSQL, to a SIEM) trust:
//! the certificates of a CA file, or the system's roots. Below every other
//! file: it names none.

use std::path::Path;

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
