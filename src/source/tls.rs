//! The TLS side of the `tcp` and `http` inputs: the certificate they present
//! and, with `client_ca_file`, the client certificates they require.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::{Input, ServerTls, SourceConfig};
use crate::sink::client::{pem_error, provider};

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
