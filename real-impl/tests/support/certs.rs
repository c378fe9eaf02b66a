//! Certificates for the intra-cluster TLS tests, made on the spot: a cluster CA and one
//! certificate per device, written into the test's own temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A throwaway certificate authority whose files live under `dir`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl TestCa {
    /// A new CA; its certificate is written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("certificate dir");
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "stormcell test cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), issuer.pem()).expect("ca.pem");
        TestCa {
            issuer,
            dir: dir.to_owned(),
        }
    }

    /// Issues `device`'s certificate (for its name and 127.0.0.1) and returns the node
    /// configuration's `[tls]` section pointing at the files.
    pub fn tls_section(&self, device: &str) -> String {
        let mut params = CertificateParams::new(vec![device.to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let cert_path = self.dir.join(format!("{device}.pem"));
        let key_path = self.dir.join(format!("{device}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("certificate file");
        std::fs::write(&key_path, key.serialize_pem()).expect("key file");
        format!(
            "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
            cert_path.display(),
            key_path.display(),
            self.dir.join("ca.pem").display()
        )
    }
}
