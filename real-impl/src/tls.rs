//! Intra-cluster TLS (PROTOCOL.md section 10): when a node's configuration has a `[tls]`
//! section, peer connections run over TLS with both sides verified against the cluster's
//! CA, and the per-device credential handshake of [`crate::net`] runs inside.
//!
//! The connecting side checks the listener's certificate against the name or IP address
//! it dialled (the peer's registered address), as any TLS client does; the listening side
//! requires a client certificate from the same CA. Certificates, keys and the CA are PEM
//! files; rustls with the `ring` provider does the work.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// The `[tls]` section of a node's configuration: PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This device's certificate chain: its own certificate first, then any intermediates.
    pub cert: PathBuf,
    /// This device's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates that sign every device's certificate; a peer presenting a
    /// certificate from any other CA is refused.
    pub ca: PathBuf,
}

/// A `[tls]` section that cannot be used. The message names the field.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("field `tls.{field}`: cannot read {}: {source}", path.display())]
    Read {
        /// `cert`, `key` or `ca`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("field `tls.{field}`: {}: {reason}", path.display())]
    Pem {
        /// `cert`, `key` or `ca`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match its certificate, say).
    #[error("field `tls`: {0}")]
    Setup(String),
}

/// The TLS side of this device's peer connections: one configuration for connecting and
/// one for accepting.
#[derive(Clone)]
pub struct PeerTls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_owned(),
        source,
    })
}

fn certificates(
    field: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        field,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl PeerTls {
    /// The TLS a node runs with: `None` without a `[tls]` section. A section that cannot be
    /// used is logged as well as returned, since the node then stops before serving.
    pub fn configured(config: Option<&TlsConfig>) -> Result<Option<Self>, TlsError> {
        let Some(config) = config else {
            return Ok(None);
        };
        Self::load(config).map(Some).inspect_err(|e| {
            tracing::error!(error = %e, "intra-cluster TLS is misconfigured");
        })
    }

    /// Reads the files a `[tls]` section names.
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let cert = read("cert", &config.cert)?;
        let key = read("key", &config.key)?;
        let ca = read("ca", &config.ca)?;
        Self::from_pem(config, &cert, &key, &ca)
    }

    /// Builds the configurations from PEM text; `config` names the files in errors.
    pub fn from_pem(
        config: &TlsConfig,
        cert: &[u8],
        key: &[u8],
        ca: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = certificates("cert", &config.cert, cert)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
            field: "key",
            path: config.key.clone(),
            reason: format!("holds no usable PEM private key: {e}"),
        })?;
        let mut roots = RootCertStore::empty();
        for c in certificates("ca", &config.ca, ca)? {
            roots.add(c).map_err(|e| TlsError::Pem {
                field: "ca",
                path: config.ca.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let setup = |e: &dyn std::fmt::Display| TlsError::Setup(e.to_string());

        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
            .build()
            .map_err(|e| setup(&e))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                TlsError::Setup(format!(
                    "the key in `tls.key` does not fit the certificate in `tls.cert`: {e}"
                ))
            })?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                TlsError::Setup(format!(
                    "the key in `tls.key` does not fit the certificate in `tls.cert`: {e}"
                ))
            })?;
        Ok(PeerTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Runs the client side of the TLS handshake with the peer dialled at `addr`
    /// (`host:port`), checking its certificate names `host`.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let name = server_name(addr)?;
        self.connector.connect(name, stream).await.map_err(|e| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("TLS handshake with peer at {addr} failed: {e}"),
            )
        })
    }

    /// Runs the server side of the TLS handshake; the peer must present a certificate
    /// from the cluster's CA.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<server::TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }
}

/// The name a peer's certificate must carry: the host part of its address.
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("peer address {addr}: `{host}` is not a name TLS can check: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_give_the_name_to_check() {
        assert_eq!(
            server_name("127.0.0.1:7001").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:7001").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("node1.example:7001").unwrap(),
            ServerName::try_from("node1.example").unwrap()
        );
    }

    fn files() -> TlsConfig {
        TlsConfig {
            cert: "/etc/stormcell/node.pem".into(),
            key: "/etc/stormcell/node.key".into(),
            ca: "/etc/stormcell/ca.pem".into(),
        }
    }

    #[test]
    fn misconfiguration_names_the_field() {
        let missing = TlsConfig {
            cert: "/nonexistent/stormcell/node.pem".into(),
            ..files()
        };
        let e = PeerTls::load(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("field `tls.cert`: cannot read /nonexistent"),
            "{e}"
        );

        let e = PeerTls::from_pem(&files(), b"garbage", b"", b"")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("field `tls.cert`: /etc/stormcell/node.pem"),
            "{e}"
        );

        let ca = testing::Ca::new("ca");
        let (cert, key) = ca.issue("repo001");
        let e = PeerTls::from_pem(
            &files(),
            cert.as_bytes(),
            b"no key here",
            ca.pem().as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("field `tls.key`"), "{e}");

        let e = PeerTls::from_pem(&files(), cert.as_bytes(), key.as_bytes(), b"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("field `tls.ca`"), "{e}");

        let (_, other_key) = ca.issue("repo002");
        let e = PeerTls::from_pem(
            &files(),
            cert.as_bytes(),
            other_key.as_bytes(),
            ca.pem().as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not fit"), "{e}");

        PeerTls::from_pem(
            &files(),
            cert.as_bytes(),
            key.as_bytes(),
            ca.pem().as_bytes(),
        )
        .expect("a matching set loads");
    }
}

/// Certificates made on the spot for tests.
#[cfg(test)]
pub(crate) mod testing {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose,
    };

    /// A throwaway certificate authority.
    pub struct Ca(CertifiedIssuer<'static, KeyPair>);

    impl Ca {
        /// A new CA called `name`.
        pub fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::new()).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().expect("key");
            Ca(CertifiedIssuer::self_signed(params, key).expect("CA certificate"))
        }

        /// The CA's certificate.
        pub fn pem(&self) -> String {
            self.0.pem()
        }

        /// A device certificate and key for `device` on 127.0.0.1, as PEM.
        pub fn issue(&self, device: &str) -> (String, String) {
            let mut params =
                CertificateParams::new(vec![device.to_owned(), "127.0.0.1".to_owned()])
                    .expect("params");
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.0).expect("certificate");
            (cert.pem(), key.serialize_pem())
        }
    }
}
