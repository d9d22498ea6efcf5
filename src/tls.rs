//! Every TLS config tailhook builds, and the PEM files they load: the
//! client side of https destinations (trusted CAs, client certificates, or
//! no verification) and the server side of `tcp` and `http` inputs (their
//! certificate and, with `client_ca_file`, the client certificates they
//! require). All use the ring provider.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::config::{DestinationConfig, Input, ServerTls, SourceConfig};

/// Builds the acceptor of a TLS listener; the error names the file at fault.
pub fn acceptor(source: &str, tls: &ServerTls, alpn_http: bool) -> anyhow::Result<TlsAcceptor> {
    let read_err = |what: &str, path: &std::path::Path, e: String| {
        anyhow::anyhow!(
            "source `{source}`: cannot read {what} {}: {e}",
            path.display()
        )
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| read_err("tls.cert_file", &tls.cert_file, pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err("tls.cert_file", &tls.cert_file, pem_error(&e)))?;
    if chain.is_empty() {
        return Err(read_err(
            "tls.cert_file",
            &tls.cert_file,
            "no certificate in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| read_err("tls.key_file", &tls.key_file, pem_error(&e)))?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| read_err("tls.client_ca_file", ca, pem_error(&e)))?
            {
                let cert = cert.map_err(|e| read_err("tls.client_ca_file", ca, pem_error(&e)))?;
                roots
                    .add(cert)
                    .map_err(|e| read_err("tls.client_ca_file", ca, e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| read_err("tls.client_ca_file", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        anyhow::anyhow!(
            "source `{source}`: tls.key_file {} does not go with tls.cert_file {}: {e}",
            tls.key_file.display(),
            tls.cert_file.display()
        )
    })?;
    if alpn_http {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reads a source's TLS files, if it has any, as `tailhook check` does.
pub fn check(src: &SourceConfig) -> anyhow::Result<()> {
    match &src.input {
        Input::Tcp { tls: Some(t), .. } => acceptor(&src.name, t, false).map(|_| ()),
        Input::Http(h) => match &h.tls {
            Some(t) => acceptor(&src.name, t, true).map(|_| ()),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The crypto provider of every TLS config (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client config of an https destination: its trusted CAs (the
/// system's and `ca_file`) or none (`verify_certificate = false`), and its
/// client certificate.
pub fn client_config(cfg: &DestinationConfig) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if cfg.verify_certificate {
        let mut roots = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &cfg.ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read ca_file {}: {}", path.display(), pem_error(&e)))?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("cannot read ca_file {}: {}", path.display(), pem_error(&e))
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "ca_file {} holds no PEM certificate",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
        }
        if roots.is_empty() {
            return Err(
                "no trusted CA: the system has no root certificates and no ca_file is set".into(),
            );
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    let mut config = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect())
                .map_err(|e| {
                    format!(
                        "cannot read client_cert_file {}: {}",
                        cert.display(),
                        pem_error(&e)
                    )
                })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "cannot read client_key_file {}: {}",
                    key.display(),
                    pem_error(&e)
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client config that verifies no server certificate: for plain-http
/// destinations, which never handshake, so reqwest loads no roots of its own.
pub fn unverified_client_config() -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
    )
}

/// A PEM file's error in words.
pub fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item found".into(),
        other => format!("{other:?}"),
    }
}

/// Accepts any server certificate (`verify_certificate = false`), while still
/// checking the handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client handshake failure in words a person can act on.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "unknown CA: the server's certificate is not signed by a trusted authority (set ca_file to your CA's PEM, or verify_certificate = false to skip the check)".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for this host name".into()
        }
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (set client_cert_file and client_key_file)".into()
        }
        rustls::Error::AlertReceived(
            a @ (rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::AccessDenied),
        ) => format!("the server did not accept our client certificate (it answered {a:?})"),
        other => other.to_string(),
    }
}
