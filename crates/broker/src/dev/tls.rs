//! `hourglassd dev` serves HTTPS like production, with a local CA of its
//! own: made once and kept in the data directory (`tls/ca.pem`, and its key
//! `tls/ca.key`, 0600), it signs a fresh server certificate for
//! `localhost`, `127.0.0.1` and `::1` at every start. Clients trust it by
//! pinning it (`HOURGLASS_CA=DATA/tls/ca.pem`), never through the system's
//! roots.
//!
//! The CA is name-constrained to `localhost` and the loopback addresses:
//! imported into a browser, or with its key stolen, it vouches for no other
//! site.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::write_secret_file;
use crate::tls::TlsFiles;

const CA_NAME: &str = "Hourglass development CA (hourglassd dev)";
/// The CA outlives many demos; the server certificate is made anew at each start.
const CA_LIFETIME: Duration = Duration::days(10 * 365);
const SERVER_LIFETIME: Duration = Duration::days(365);
/// Accepted by a client whose clock is a little behind.
const BACKDATE: Duration = Duration::hours(1);

/// Where dev mode keeps its TLS files.
#[derive(Debug, Clone)]
pub struct DevTls {
    /// The CA certificate clients pin (public).
    pub ca_cert: PathBuf,
    /// The CA's private key (0600).
    pub ca_key: PathBuf,
    /// The server certificate and its key (0600), signed at this start.
    pub server: TlsFiles,
}

impl DevTls {
    pub fn in_dir(data_dir: &Path) -> DevTls {
        let dir = data_dir.join("tls");
        DevTls {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server: TlsFiles { cert: dir.join("server.pem"), key: dir.join("server.key") },
        }
    }

    /// The CA, made on first use and reused afterwards, and a new server
    /// certificate for `localhost`, the loopback addresses and `listen_ip`
    /// (when it is a loopback address other than those), signed by it.
    pub fn prepare(data_dir: &Path, listen_ip: IpAddr) -> Result<DevTls> {
        let files = DevTls::in_dir(data_dir);
        let ca = files.load_or_create_ca()?;
        files.sign_server_certificate(&ca, listen_ip)?;
        Ok(files)
    }

    fn load_or_create_ca(&self) -> Result<Issuer<'static, KeyPair>> {
        if self.ca_cert.exists() && self.ca_key.exists() {
            let pem = Zeroizing::new(
                std::fs::read_to_string(&self.ca_key)
                    .map_err(Error::io(format!("reading {}", self.ca_key.display())))?,
            );
            let key = KeyPair::from_pem(&pem)
                .map_err(|_| Error::Config(format!("{} is not a usable CA key", self.ca_key.display())))?;
            // The same name and key give the same issuer and key identifier
            // as the certificate made at first start, which stays as it is.
            return Ok(Issuer::new(ca_params(now()), key));
        }
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let params = ca_params(now());
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        write_secret_file(&self.ca_key, key.serialize_pem().as_bytes())?;
        write_public_file(&self.ca_cert, cert.pem().as_bytes())?;
        tracing::info!("made the dev CA {}", self.ca_cert.display());
        Ok(Issuer::new(params, key))
    }

    fn sign_server_certificate(&self, ca: &Issuer<'_, KeyPair>, listen_ip: IpAddr) -> Result<()> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).map_err(rcgen_error)?;
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        if listen_ip.is_loopback() && !ips.contains(&listen_ip) {
            ips.push(listen_ip);
        }
        params.subject_alt_names.extend(ips.into_iter().map(SanType::IpAddress));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let now = now();
        params.not_before = now - BACKDATE;
        params.not_after = now + SERVER_LIFETIME;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, ca).map_err(rcgen_error)?;
        write_secret_file(&self.server.key, key.serialize_pem().as_bytes())?;
        write_public_file(&self.server.cert, cert.pem().as_bytes())
    }
}

fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".into()),
            GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([127, 0, 0, 0], 8)),
            GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(Ipv6Addr::LOCALHOST.octets(), 128)),
        ],
        excluded_subtrees: Vec::new(),
    });
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_LIFETIME;
    params
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn rcgen_error(error: rcgen::Error) -> Error {
    Error::Internal(format!("making the dev TLS certificates: {error}"))
}

/// A certificate: anyone may read it.
fn write_public_file(path: &Path, contents: &[u8]) -> Result<()> {
    crate::files::write_atomic(path, contents, crate::files::Access::Everyone)
        .map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    #[test]
    fn dev_generates_a_local_ca_once_and_reuses_it() {
        let data = tempfile::tempdir().expect("a temporary directory");
        let first = DevTls::prepare(data.path(), loopback()).expect("first start makes the CA");
        let ca = std::fs::read(&first.ca_cert).expect("the CA certificate is written");
        let ca_key = std::fs::read(&first.ca_key).expect("the CA key is written");
        let server = std::fs::read(&first.server.cert).expect("the server certificate is written");
        #[cfg(unix)]
        for secret in [&first.ca_key, &first.server.key] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(secret).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is readable by the broker's user only", secret.display());
        }

        let second = DevTls::prepare(data.path(), loopback()).expect("a restart reuses the CA");
        assert_eq!(std::fs::read(&second.ca_cert).expect("CA"), ca, "the CA certificate clients pinned stays");
        assert_eq!(std::fs::read(&second.ca_key).expect("key"), ca_key, "the CA key stays");
        assert_ne!(std::fs::read(&second.server.cert).expect("server"), server, "the server certificate is new");

        // The new server certificate chains to the CA made at first start.
        let roots = {
            let mut roots = rustls::RootCertStore::empty();
            for cert in crate::tls::read_certificates(&first.ca_cert).expect("the CA parses") {
                roots.add(cert).expect("the CA is a usable root");
            }
            std::sync::Arc::new(roots)
        };
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots,
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("a verifier");
        let chain = crate::tls::read_certificates(&second.server.cert).expect("the server certificate parses");
        let now = rustls::pki_types::UnixTime::now();
        for name in ["localhost", "127.0.0.1", "::1"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).expect("a name");
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                verifier.as_ref(),
                &chain[0],
                &chain[1..],
                &server_name,
                &[],
                now,
            )
            .unwrap_or_else(|error| panic!("the restarted broker's certificate is valid for {name}: {error}"));
        }
        let elsewhere = rustls::pki_types::ServerName::try_from("hourglass.acme.example").expect("a name");
        let refused = rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &chain[0],
            &chain[1..],
            &elsewhere,
            &[],
            now,
        );
        assert!(refused.is_err(), "the dev certificate names loopback only");
    }
}
