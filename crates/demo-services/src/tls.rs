//! TLS for the demo HTTP job, the way a job serving HTTPS does it: a certificate made at start
//! (self-signed, for the names the job may be reached by) or read from PEM files, and a rustls
//! server offering `h2` and `http/1.1` by ALPN (or only the protocols asked for).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the demo job's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoTlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCert(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate and the ALPN offer of a demo job serving TLS.
#[derive(Clone, Debug)]
pub struct DemoTls {
    config: Arc<rustls::ServerConfig>,
    cert_pem: String,
}

impl DemoTls {
    /// A self-signed certificate for `localhost`, the loopback addresses and `extra_names`
    /// (host names or IP addresses), offering `h2` and `http/1.1`.
    pub fn self_signed(extra_names: &[String]) -> Result<DemoTls, DemoTlsError> {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(extra_names.iter().cloned());
        names.dedup();
        let generated = rcgen::generate_simple_self_signed(names)?;
        let cert_pem = generated.cert.pem();
        let key = PrivateKeyDer::try_from(generated.key_pair.serialize_der())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Self::build(vec![generated.cert.der().clone()], key, cert_pem)
    }

    /// The certificate chain and key in `cert` and `key` (PEM), offering `h2` and `http/1.1`.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<DemoTls, DemoTlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| DemoTlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(DemoTlsError::NoCert(cert.display().to_string()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|_| DemoTlsError::NoKey(key.display().to_string()))?;
        Self::build(chain, key, String::from_utf8_lossy(&cert_pem).into_owned())
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        cert_pem: String,
    ) -> Result<DemoTls, DemoTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(DemoTls {
            config: Arc::new(config),
            cert_pem,
        })
    }

    /// Offers only `protocols` by ALPN (e.g. `["http/1.1"]` for a job without HTTP/2).
    pub fn with_alpn(mut self, protocols: &[&str]) -> DemoTls {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self.config = Arc::new(config);
        self
    }

    /// The certificate (PEM), e.g. for a client that verifies it.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// The flags a demo job takes to serve TLS (shared by the `demo-services` binary and
/// `task-proxy demo-job`).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Serve TLS (h2 and http/1.1 by ALPN), with a self-signed certificate unless --tls-cert
    /// and --tls-key are given: a job for a service with `protocol="https"`.
    #[arg(long)]
    pub tls: bool,
    /// Certificate chain (PEM) to serve instead of a self-signed one.
    #[arg(long, requires_all = ["tls", "tls_key"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires_all = ["tls", "tls_cert"])]
    pub tls_key: Option<std::path::PathBuf>,
    /// ALPN protocols offered, in order of preference.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "h2,http/1.1",
        requires = "tls"
    )]
    pub tls_alpn: Vec<String>,
}

impl TlsArgs {
    /// The TLS to serve, if asked for; a self-signed certificate also names `names`.
    pub fn load(&self, names: &[String]) -> Result<Option<DemoTls>, DemoTlsError> {
        if !self.tls {
            return Ok(None);
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => DemoTls::from_pem_files(cert, key)?,
            _ => DemoTls::self_signed(names)?,
        };
        let alpn: Vec<&str> = self.tls_alpn.iter().map(String::as_str).collect();
        Ok(Some(tls.with_alpn(&alpn)))
    }
}
