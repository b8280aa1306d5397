//! Certificates made at test time with `rcgen` (no private key is committed): a CA, server certificates
//! for loopback (good, expired, for another host), and client certificates, written as PEM files into a
//! directory of their own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nucleon::TlsClientConfig;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate authority that signs the others.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
    dir: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// Which server certificate to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCert {
    /// Valid now, for `localhost` and `127.0.0.1`.
    Loopback,
    /// For `localhost` and `127.0.0.1`, but expired in 2001.
    Expired,
    /// Valid now, but for `other.example` only.
    OtherHost,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl TestCa {
    /// A new CA named `name`, its files in a fresh directory under the system's temporary directory.
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!(
            "nucleon-certs-{}-{}-{name}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for test certificates");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("the CA certificate");
        write(&dir.join("ca.pem"), &cert.pem());
        TestCa { cert, key, dir }
    }

    /// The CA's certificate (PEM file), to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client TLS config that trusts this CA only.
    pub fn client_tls(&self) -> TlsClientConfig {
        self.client_tls_builder()
            .build()
            .expect("a client TLS config")
    }

    /// A client TLS config that trusts this CA only and presents `identity` to servers that ask.
    pub fn client_tls_as(&self, identity: &CertFiles) -> TlsClientConfig {
        self.client_tls_builder()
            .client_certificate(&identity.cert, &identity.key)
            .build()
            .expect("a client TLS config")
    }

    fn client_tls_builder(&self) -> nucleon::TlsClientConfigBuilder {
        TlsClientConfig::builder()
            .without_system_roots()
            .ca_file(self.ca_file())
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server certificate signed by this CA.
    pub fn server(&self, kind: ServerCert) -> CertFiles {
        let names = match kind {
            ServerCert::Loopback | ServerCert::Expired => {
                vec!["localhost".to_string(), "127.0.0.1".to_string()]
            }
            ServerCert::OtherHost => vec!["other.example".to_string()],
        };
        let mut params = CertificateParams::new(names).expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, "server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if kind == ServerCert::Expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        self.sign(params, &format!("server-{kind:?}"))
    }

    /// A client certificate for `common_name`, signed by this CA.
    pub fn client(&self, common_name: &str) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, &format!("client-{common_name}"))
    }

    fn sign(&self, params: CertificateParams, stem: &str) -> CertFiles {
        let key = KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a signed certificate");
        let files = CertFiles {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}-key.pem")),
        };
        write(&files.cert, &cert.pem());
        write(&files.key, &key.serialize_pem());
        files
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
