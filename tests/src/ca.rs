//! A certificate authority of a test's own, for servers that speak TLS
//! (the broker, a PostgreSQL cluster) and the clients that pin it.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let pem = params.self_signed(&key).expect("a self-signed CA").pem();
        TestCa { issuer: Issuer::new(params, key), pem }
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.pem).expect("CA written");
    }

    /// A server certificate for `names` (host names or addresses), with
    /// its key: (certificate PEM, key PEM).
    pub fn server(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("a server key");
        let params =
            CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>()).expect("names");
        let cert = params.signed_by(&key, &self.issuer).expect("signed by the CA");
        (cert.pem(), key.serialize_pem())
    }
}
