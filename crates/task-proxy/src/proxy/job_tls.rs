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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    /// A job's TLS side: serves `key` (which may not match `cert`) and records the SNI.
    #[derive(Debug)]
    struct Job {
        key: Arc<CertifiedKey>,
        sni: Mutex<Vec<Option<String>>>,
    }

    impl ResolvesServerCert for Job {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            if let Ok(mut sni) = self.sni.lock() {
                sni.push(hello.server_name().map(str::to_string));
            }
            Some(self.key.clone())
        }
    }

    fn key_of(pair: &rcgen::KeyPair) -> Arc<dyn rustls::sign::SigningKey> {
        let der = PrivateKeyDer::try_from(pair.serialize_der()).unwrap();
        rustls::crypto::ring::sign::any_supported_type(&der).unwrap()
    }

    /// Serves TLS handshakes on a free port with `cert` and the key `signer`, offering `alpn`.
    async fn job(
        cert: CertificateDer<'static>,
        signer: &rcgen::KeyPair,
        alpn: &[&[u8]],
    ) -> (std::net::SocketAddr, Arc<Job>) {
        let resolver = Arc::new(Job {
            key: Arc::new(CertifiedKey::new(vec![cert], key_of(signer))),
            sni: Mutex::new(Vec::new()),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // Held open until the client is done with it.
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tokio::io::copy(&mut tokio::io::empty(), &mut tls).await;
                        let mut sink = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut sink).await;
                    }
                });
            }
        });
        (addr, resolver)
    }

    async fn connect(
        tls: &JobTls,
        addr: std::net::SocketAddr,
        host: &str,
        http1_only: bool,
    ) -> std::io::Result<JobSession> {
        let tcp = TcpStream::connect(addr).await?;
        tls.handshake(tcp, host, http1_only).await
    }

    fn self_signed(names: &[&str]) -> (CertificateDer<'static>, rcgen::KeyPair) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        (made.cert.der().clone(), made.key_pair)
    }

    #[tokio::test]
    async fn unverified_by_default_alpn_as_the_job_picks_sni_for_names_only() {
        let tls = JobTls::new(None).unwrap();
        let (cert, key) = self_signed(&["localhost"]);
        let (both, seen) = job(cert.clone(), &key, &[H2, HTTP1]).await;
        let session = connect(&tls, both, "127.0.0.1", false).await.unwrap();
        assert!(session.h2);
        // Connections that a WebSocket tunnel takes over offer HTTP/1.1 only.
        let session = connect(&tls, both, "localhost", true).await.unwrap();
        assert!(!session.h2);
        assert_eq!(
            *seen.sni.lock().unwrap(),
            [None, Some("localhost".to_string())]
        );
        let (http1, _) = job(cert, &key, &[HTTP1]).await;
        assert!(!connect(&tls, http1, "127.0.0.1", false).await.unwrap().h2);
    }

    #[tokio::test]
    async fn a_job_without_the_key_of_its_certificate_fails_even_unverified() {
        let tls = JobTls::new(None).unwrap();
        let (cert, _) = self_signed(&["localhost"]);
        let other = rcgen::KeyPair::generate().unwrap();
        let (addr, _) = job(cert, &other, &[H2, HTTP1]).await;
        let error = connect(&tls, addr, "127.0.0.1", false).await.unwrap_err();
        assert!(error.to_string().contains("ignature"), "{error}");
    }

    #[tokio::test]
    async fn with_a_ca_the_chain_and_the_name_are_checked() {
        let (cert, key) = self_signed(&["localhost", "127.0.0.1"]);
        let (addr, _) = job(cert.clone(), &key, &[H2, HTTP1]).await;
        let trusting = JobTls::new(Some(&JobTlsCa {
            path: "job.pem".into(),
            certs: vec![cert],
        }))
        .unwrap();
        assert!(trusting.verifies());
        connect(&trusting, addr, "127.0.0.1", false).await.unwrap();
        connect(&trusting, addr, "localhost", false).await.unwrap();
        assert!(connect(&trusting, addr, "127.0.0.2", false).await.is_err());
        assert!(connect(&trusting, addr, "job.example", false)
            .await
            .is_err());
        let (unrelated, _) = self_signed(&["localhost"]);
        let other = JobTls::new(Some(&JobTlsCa {
            path: "other.pem".into(),
            certs: vec![unrelated],
        }))
        .unwrap();
        assert!(connect(&other, addr, "127.0.0.1", false).await.is_err());
    }
}
