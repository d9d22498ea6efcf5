//! A throw-away PKI for TLS tests: one CA and one server certificate signed by
//! it, valid for DNS `localhost` and IP `127.0.0.1`.
//!
//! Everything uses the `ring` crypto provider explicitly; nothing relies on a
//! process-wide default provider.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// PEM-encoded CA certificate, server certificate and server private key.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// The CA certificate (trust anchor) that signed `cert_pem`.
    pub ca_pem: String,
    /// The server certificate, for DNS `localhost` and IP `127.0.0.1`.
    pub cert_pem: String,
    /// The server certificate's private key (PKCS#8).
    pub key_pem: String,
}

/// Makes a new CA and a server certificate signed by it for DNS `localhost`
/// and IP `127.0.0.1`. Each call makes a different CA, so a second `make_pki()`
/// is a convenient "wrong CA".
pub fn make_pki() -> TestPki {
    let ca_key = KeyPair::generate().expect("generate CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::CommonName, "tailhook test CA");
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign CA");

    let key = KeyPair::generate().expect("generate server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "localhost");
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca).expect("sign server cert");

    TestPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl TestPki {
    /// A rustls server configuration (ring provider, TLS 1.2 and 1.3, no
    /// client authentication, no ALPN) serving the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs = vec![self.cert_der()];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("parse key PEM");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate and key");
        Arc::new(config)
    }

    /// A rustls client configuration (ring provider) that trusts only this
    /// PKI's CA. For tests that talk TLS to an emulator directly.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).expect("add CA to root store");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns that path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        fs::write(&path, &self.ca_pem).expect("write ca.pem");
        path
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("parse CA PEM")
    }

    /// The server certificate in DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("parse cert PEM")
    }
}
