//! Which certificates a client trusts for its broker.
//!
//! By default a broker's certificate is verified against the system's roots
//! (rustls with ring, through the platform verifier). A CA file configured
//! for a broker (`--ca`, `HOURGLASS_CA`) pins it: for that broker's origin
//! (scheme, host, port) only the certificates in that file are trusted, and
//! the system's roots are not. Other origins (an identity provider elsewhere)
//! are verified against the system's roots as usual; the dev issuer at
//! `{broker}/dev` shares the broker's origin and so its pin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Error, Result};

/// Names the CA file that pins the broker, as `--ca` does.
pub const CA_ENV: &str = "HOURGLASS_CA";

/// What a client trusts for one broker's certificate.
#[derive(Clone, Default)]
pub struct Trust {
    pinned: Option<Arc<Pinned>>,
}

struct Pinned {
    /// `https://host:port` of the broker: the origin the pin applies to.
    origin: String,
    ca_file: PathBuf,
    certificates: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pinned {
            Some(pinned) => write!(f, "Trust(only {} for {})", pinned.ca_file.display(), pinned.origin),
            None => f.write_str("Trust(system roots)"),
        }
    }
}

impl Trust {
    /// The system's roots, for every origin.
    pub fn system() -> Trust {
        Trust::default()
    }

    /// Only the CA certificates in `ca_file` (PEM) for `broker`'s origin.
    pub fn pinned(broker: &str, ca_file: &Path) -> Result<Trust> {
        let pem = std::fs::read(ca_file).map_err(|error| {
            Error::Config(format!("cannot read the broker's CA file {}: {error}", ca_file.display()))
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| Error::Config(format!("the CA file {} is not PEM: {error}", ca_file.display())))?;
        if certificates.is_empty() {
            return Err(Error::Config(format!("the CA file {} holds no PEM certificate", ca_file.display())));
        }
        let origin = origin(broker).ok_or_else(|| Error::Config(format!("\"{broker}\" is not a broker URL")))?;
        Ok(Trust { pinned: Some(Arc::new(Pinned { origin, ca_file: ca_file.to_path_buf(), certificates })) })
    }

    /// `ca_file` if given, else the file `HOURGLASS_CA` names, else the
    /// system's roots.
    pub fn for_broker(broker: &str, ca_file: Option<&Path>) -> Result<Trust> {
        let from_env = std::env::var_os(CA_ENV).filter(|path| !path.is_empty()).map(PathBuf::from);
        match ca_file.map(Path::to_path_buf).or(from_env) {
            Some(path) => Trust::pinned(broker, &path),
            None => Ok(Trust::system()),
        }
    }

    /// The pinned CA file, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.pinned.as_deref().map(|pinned| pinned.ca_file.as_path())
    }

    /// A reqwest builder for calls to `url`: the pinned CA alone when `url`
    /// is the broker's origin, the system's roots otherwise.
    pub(crate) fn builder_for(&self, url: &str) -> reqwest::ClientBuilder {
        if self.pins(url) { self.builder_for_pinned() } else { Trust::system().builder_for_pinned() }
    }

    /// A reqwest builder trusting the pinned CA alone, or the system's roots
    /// when nothing is pinned.
    pub(crate) fn builder_for_pinned(&self) -> reqwest::ClientBuilder {
        // reqwest is built without a default TLS crypto provider; install
        // ring's once per process (an error means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder();
        match &self.pinned {
            Some(pinned) => builder.tls_certs_only(pinned.certificates.iter().cloned()),
            None => builder,
        }
    }

    /// Whether calls to `url` use the pin rather than the system's roots.
    pub(crate) fn pins(&self, url: &str) -> bool {
        self.pinned.as_deref().is_some_and(|pinned| origin(url).as_deref() == Some(pinned.origin.as_str()))
    }
}

/// `scheme://host:port`, with the scheme's default port made explicit.
fn origin(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url.trim()).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let port = url.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", url.scheme()))
}

/// Says what a TLS failure means for the person at the terminal.
pub(crate) fn explain(error: &reqwest::Error, trust: &Trust, url: &str) -> Option<String> {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    let mut certificate = false;
    while let Some(current) = source {
        let text = current.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("unknownissuer") || text.contains("unknown issuer") {
            certificate = true;
            break;
        }
        source = current.source();
    }
    if !certificate {
        return None;
    }
    let detail = source.map(|error| error.to_string()).unwrap_or_default();
    Some(match trust.pinned.as_deref() {
        Some(pinned) if trust.pins(url) => format!(
            "the broker's TLS certificate is not signed by the pinned CA {} ({detail})",
            pinned.ca_file.display()
        ),
        _ => format!(
            "the TLS certificate is not trusted by this system ({detail}); if the broker uses a private CA, \
             name its certificate with --ca or {CA_ENV}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_applies_to_the_broker_origin_only() {
        assert_eq!(origin("https://Broker.example/v1/x").as_deref(), Some("https://broker.example:443"));
        assert_eq!(origin("https://127.0.0.1:7300/dev").as_deref(), Some("https://127.0.0.1:7300"));
        let dir = tempfile_dir();
        let ca = dir.join("not-a-ca.pem");
        std::fs::write(&ca, "no certificate here\n").expect("written");
        let refused = Trust::pinned("https://127.0.0.1:7300", &ca).expect_err("an empty CA file is refused");
        assert!(refused.to_string().contains("no PEM certificate"), "it says why: {refused}");
        let missing = Trust::pinned("https://127.0.0.1:7300", &dir.join("absent.pem")).expect_err("refused");
        assert!(missing.to_string().contains("cannot read the broker's CA file"), "it says why: {missing}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hourglass-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        dir
    }
}
