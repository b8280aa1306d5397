//! TLS for connections (`amqps://`) and listeners, on rustls with the aws-lc-rs provider.
//!
//! A client trusts the operating system's roots unless told otherwise, plus any CA added, verifies the
//! server's name (SNI is the URL's host unless [`TlsClientConfig::server_name`] says otherwise) and may
//! present a certificate of its own. A listener presents a certificate chain and may verify clients'
//! certificates against a CA; a verified certificate's subject is the identity SASL EXTERNAL gives.
//! [AMQP 1.0 §5.2] describes TLS on the AMQP port (the `AMQP 2 1 0 0` header) and on a dedicated one; a
//! listener takes both, and plain AMQP on the same port unless [`TlsServerConfig::require_tls`].

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::error::Error;

/// The protocol header that asks for TLS before AMQP [AMQP 1.0 §5.2.1].
pub(crate) const TLS_HEADER: [u8; 8] = *b"AMQP\x02\x01\x00\x00";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_error(what: impl std::fmt::Display) -> Error {
    Error::Tls(what.to_string())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error(format!("{}: {e}", path.display())))
}

fn roots_from(paths: &[std::path::PathBuf]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        for cert in read_certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(roots)
}

/// How a client connection does TLS: which servers it trusts and which certificate it presents. Cheap to
/// clone; one config serves any number of connections.
#[derive(Clone)]
pub struct TlsClientConfig {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: Option<String>,
}

impl std::fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClientConfig {
    /// Trusts the operating system's root certificates (the default for `amqps://`). The trust store is read
    /// once per process, on first use.
    pub fn system_roots() -> Result<TlsClientConfig, Error> {
        static SYSTEM: std::sync::OnceLock<Result<TlsClientConfig, Error>> =
            std::sync::OnceLock::new();
        SYSTEM
            .get_or_init(|| TlsClientConfig::builder().build())
            .clone()
    }

    /// A config to build: system roots, no client certificate, to start with.
    pub fn builder() -> TlsClientConfigBuilder {
        TlsClientConfigBuilder {
            system_roots: true,
            ca_files: Vec::new(),
            identity: None,
            server_name: None,
        }
    }

    /// Uses a rustls config as it is (for what the builder does not offer).
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> TlsClientConfig {
        TlsClientConfig {
            config,
            server_name: None,
        }
    }

    /// Checks the server's certificate against `name` (and sends it as SNI) instead of the URL's host.
    pub fn server_name(mut self, name: impl Into<String>) -> TlsClientConfig {
        self.server_name = Some(name.into());
        self
    }

    /// The name the server's certificate must carry for `host`.
    pub(crate) fn name_for(&self, host: &str) -> Result<ServerName<'static>, Error> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string())
            .map_err(|e| tls_error(format!("{name:?} is not a TLS server name: {e}")))
    }
}

/// Builds a [`TlsClientConfig`].
#[derive(Debug)]
pub struct TlsClientConfigBuilder {
    system_roots: bool,
    ca_files: Vec<std::path::PathBuf>,
    identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    server_name: Option<String>,
}

impl TlsClientConfigBuilder {
    /// Also trusts the CA certificates in this PEM file (a private CA).
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca_files.push(path.as_ref().to_path_buf());
        self
    }

    /// Trusts only the CAs given with [`ca_file`](Self::ca_file), not the operating system's.
    pub fn without_system_roots(mut self) -> Self {
        self.system_roots = false;
        self
    }

    /// Presents this certificate chain (PEM, leaf first) and its private key (PEM) to servers that ask.
    pub fn client_certificate(
        mut self,
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Self {
        self.identity = Some((
            certificate_chain.as_ref().to_path_buf(),
            private_key.as_ref().to_path_buf(),
        ));
        self
    }

    /// See [`TlsClientConfig::server_name`].
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Reads the files and builds the config. An unreadable file, or no trusted root at all, is an error.
    pub fn build(self) -> Result<TlsClientConfig, Error> {
        let mut roots = roots_from(&self.ca_files)?;
        if self.system_roots {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                log::warn!("loading the system's root certificates: {e}");
            }
            let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
        }
        if roots.is_empty() {
            return Err(tls_error(
                "no trusted root certificate: the system has none and no CA file was given",
            ));
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_root_certificates(roots);
        let config = match self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(read_certificates(&chain)?, read_key(&key)?)
                .map_err(tls_error)?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsClientConfig {
            config: Arc::new(config),
            server_name: self.server_name,
        })
    }
}

/// How a listener does TLS: its certificate, whether it verifies clients' certificates, and whether it
/// also takes plain AMQP on the same port. Cheap to clone.
#[derive(Clone)]
pub struct TlsServerConfig {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) require_tls: bool,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("require_tls", &self.require_tls)
            .finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// Presents the certificate chain in `certificate_chain` (PEM, leaf first) with the private key in
    /// `private_key` (PEM: PKCS#8, PKCS#1 or SEC1). Clients are not asked for certificates.
    pub fn from_pem_files(
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<TlsServerConfig, Error> {
        Self::build(certificate_chain.as_ref(), private_key.as_ref(), None)
    }

    /// As [`from_pem_files`](Self::from_pem_files), and asks clients for a certificate issued by a CA in
    /// `client_ca` (PEM). A client that presents one is verified (a bad one fails the handshake) and may
    /// then authenticate with SASL EXTERNAL as its certificate's subject; one that presents none may still
    /// use the other mechanisms.
    pub fn with_client_ca(
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
        client_ca: impl AsRef<Path>,
    ) -> Result<TlsServerConfig, Error> {
        Self::build(
            certificate_chain.as_ref(),
            private_key.as_ref(),
            Some(client_ca.as_ref()),
        )
    }

    /// Uses a rustls config as it is.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsServerConfig {
        TlsServerConfig {
            config,
            require_tls: false,
        }
    }

    /// Refuses plain AMQP on the listener's port: a client that does not start TLS gets the TLS protocol
    /// header back and the socket closed [AMQP 1.0 §2.2]. Off by default, as Proton, so that one port
    /// serves both.
    pub fn require_tls(mut self, require: bool) -> TlsServerConfig {
        self.require_tls = require;
        self
    }

    fn build(chain: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsServerConfig, Error> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let builder = match client_ca {
            Some(ca) => {
                let roots = roots_from(&[ca.to_path_buf()])?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(tls_error)?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(read_certificates(chain)?, read_key(key)?)
            .map_err(tls_error)?;
        Ok(TlsServerConfig {
            config: Arc::new(config),
            require_tls: false,
        })
    }
}

/// The identity a verified client certificate gives: its subject's common name, or the whole subject
/// (RFC 4514 form) when it has none.
pub(crate) fn certificate_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    cn.or_else(|| Some(subject.to_string()))
        .filter(|s| !s.is_empty())
}

/// A clear, one-line account of a failed TLS handshake (rustls's own, for the errors people meet).
pub(crate) fn describe_handshake_error(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error as Rustls};
    let inner = e.get_ref().and_then(|inner| inner.downcast_ref::<Rustls>());
    match inner {
        Some(Rustls::InvalidCertificate(c)) => {
            let why = match c {
                CertificateError::UnknownIssuer => {
                    "it is not issued by a trusted CA (add the CA with a CA file)".to_string()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "it has expired".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "it is not valid yet".to_string()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "it is not valid for this host name".to_string()
                }
                other => format!("{other:?}"),
            };
            format!("TLS handshake failed: the peer's certificate was refused: {why}")
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {e}"),
    }
}
