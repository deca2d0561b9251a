//! TLS termination: a rustls server config (ALPN `h2`, `http/1.1`) whose certificate is
//! swapped atomically when the PEM files change, so renewals need no restart. A bad pair of
//! files is logged and the previous certificate stays.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCert { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("the key in {path} is not usable: {source}")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a certificate chain and key into a signing key rustls can serve.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .ok()
        .ok_or_else(|| TlsError::NoKey {
            path: key.to_path_buf(),
        })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|source| {
        TlsError::BadKey {
            path: key.to_path_buf(),
            source,
        }
    })?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Serves whichever certificate was loaded last.
#[derive(Debug)]
pub struct ReloadingResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The TLS side of the proxy: server config plus the files it reloads.
#[derive(Debug, Clone)]
pub struct Tls {
    pub server_config: Arc<rustls::ServerConfig>,
    resolver: Arc<ReloadingResolver>,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// Loads the files (failing the start if they are bad) and builds the server config.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Tls, TlsError> {
        let certified = load_certified_key(&cert, &key)?;
        let resolver = Arc::new(ReloadingResolver {
            current: ArcSwap::from_pointee(certified),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            server_config: Arc::new(config),
            resolver,
            cert,
            key,
        })
    }

    /// Reloads the pair now; on failure the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = load_certified_key(&self.cert, &self.key)?;
        self.resolver.current.store(Arc::new(certified));
        Ok(())
    }

    /// Polls the files' modification times and reloads on change, until `shutdown`.
    pub async fn watch(self, period: Duration, shutdown: CancellationToken) {
        let paths = vec![self.cert.clone(), self.key.clone()];
        crate::file_watch::on_change(paths, period, shutdown, || match self.reload() {
            Ok(()) => tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays")
            }
        })
        .await
    }
}
