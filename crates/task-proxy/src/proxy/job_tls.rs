//! TLS to jobs of `https` services: the rustls client configurations (what ALPN offers, how
//! the job's certificate is checked) and the handshake [`super::upstream`] runs on a fresh
//! connection.
//!
//! Jobs usually make a self-signed certificate at start, which nothing could verify, so by
//! default the certificate is not checked. The handshake still is: the job must prove it holds
//! the key of the certificate it sent ([`AnyCertificate`] verifies the handshake signatures with
//! the provider's algorithms), which keeps the session keys honest against a passive
//! observer. With `--job-tls-ca-file` the certificate must chain to one of those CAs and be
//! issued for the job's host (its DNS name or IP address, as discovery reports it).

use crate::config::JobTlsCa;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// ALPN protocol ids.
const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

/// Why TLS to jobs cannot be set up (at start-up).
#[derive(Debug, thiserror::Error)]
pub enum JobTlsError {
    #[error("TLS to jobs: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS to jobs: the CA bundle cannot verify certificates: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// The client side of TLS to jobs, shared by every worker.
#[derive(Debug, Clone)]
pub struct JobTls {
    /// Offers `h2` and `http/1.1`: the job picks.
    any: Arc<ClientConfig>,
    /// Offers `http/1.1` only, for WebSocket upgrades (an HTTP/1.1 mechanism).
    http1: Arc<ClientConfig>,
    /// Whether job certificates are verified (against `--job-tls-ca-file`).
    verifies: bool,
}

/// What a handshake with a job settled.
#[derive(Debug)]
pub struct JobSession {
    pub stream: TlsStream<TcpStream>,
    /// The job picked `h2` by ALPN (otherwise HTTP/1.1, with or without ALPN).
    pub h2: bool,
}

impl JobTls {
    /// Client configurations verifying job certificates against `ca`, or not at all.
    pub fn new(ca: Option<&JobTlsCa>) -> Result<JobTls, JobTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                // The bundle was checked when the flags were read.
                let (_, ignored) = roots.add_parsable_certificates(ca.certs.iter().cloned());
                if ignored > 0 {
                    tracing::warn!(ignored, path = %ca.path.display(), "CA certificates not usable");
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()?
            }
            None => Arc::new(AnyCertificate {
                provider: provider.clone(),
            }),
        };
        let config = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, JobTlsError> {
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(JobTls {
            any: config(&[H2, HTTP1])?,
            http1: config(&[HTTP1])?,
            verifies: ca.is_some(),
        })
    }

    /// Whether job certificates are verified.
    pub fn verifies(&self) -> bool {
        self.verifies
    }

    /// Runs the handshake on `tcp` with the job at `host` (sent as SNI when it is a DNS name;
    /// an IP address is not sent, as TLS has no SNI for addresses). `http1_only`: offer only
    /// HTTP/1.1 (for connections a WebSocket tunnel takes over).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        http1_only: bool,
    ) -> std::io::Result<JobSession> {
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name for TLS: {e}"),
            )
        })?;
        let config = if http1_only { &self.http1 } else { &self.any };
        let stream = TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
        Ok(JobSession { stream, h2 })
    }
}

/// Accepts any certificate the job presents, but checks that the job signed the handshake
/// with that certificate's key (see the module docs).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
