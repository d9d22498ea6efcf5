//! A throw-away PKI for TLS tests: one CA and one server certificate signed by
//! it, valid for DNS `localhost` and IP `127.0.0.1`.
//! [`ClientCa`] issues client certificates, for listeners that require them.
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

    /// Like [`TestPki::server_config`], requiring a client certificate
    /// signed by `client_ca` (mutual TLS).
    pub fn server_config_requiring(&self, client_ca: &ClientCa) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(client_ca.pem().as_bytes()).expect("client CA"))
            .expect("add client CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("parse key PEM");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert_der()], key)
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

impl TestPki {
    /// Writes the server certificate and its key to `dir/server.pem` and
    /// `dir/server-key.pem` (for a TLS listener of tailhook's own) and
    /// returns (certificate path, key path).
    pub fn write_server(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("server.pem");
        let key = dir.join("server-key.pem");
        fs::write(&cert, &self.cert_pem).expect("write server.pem");
        fs::write(&key, &self.key_pem).expect("write server-key.pem");
        (cert, key)
    }

    /// Like [`TestPki::client_config`], presenting a client certificate
    /// (`(certificate PEM, PKCS#8 key PEM)`, e.g. from [`ClientCa::issue`]).
    pub fn client_config_with_cert(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).expect("add CA to root store");
        let certs = vec![
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("parse client cert PEM")
        ];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("parse client key PEM");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client certificate and key");
        Arc::new(config)
    }
}

/// A CA that issues client certificates, for listeners that require them
/// (`client_ca_file`). Each one is new, so a second is a "wrong CA".
pub struct ClientCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl ClientCa {
    pub fn new(name: &str) -> ClientCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate client CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign client CA");
        ClientCa { issuer }
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/<file>` and returns that path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        fs::write(&path, self.pem()).expect("write client CA");
        path
    }

    /// A client certificate (extended key usage clientAuth) for `common_name`:
    /// (certificate PEM, PKCS#8 key PEM).
    pub fn issue(&self, common_name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("generate client key");
        let mut params =
            CertificateParams::new(vec![common_name.to_owned()]).expect("client params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign client cert");
        (cert.pem(), key.serialize_pem())
    }
}
