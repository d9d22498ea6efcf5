//! Every TLS config tailhook builds, and the PEM files they load: the
//! client side of https destinations (trusted CAs, client certificates, or
//! no verification) and the server side of `tcp` and `http` inputs (their
//! certificate and, with `client_ca_file`, the client certificates they
//! require). All use the ring provider.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
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
        let mut pinned = Vec::new();
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
                    .add(cert.clone())
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                pinned.push(cert);
            }
        }
        if roots.is_empty() {
            return Err(
                "no trusted CA: the system has no root certificates and no ca_file is set".into(),
            );
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                webpki,
                pinned,
                server_name: cfg
                    .server_name
                    .as_deref()
                    .and_then(|n| ServerName::try_from(n.to_string()).ok()),
            }))
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

/// The TLS session cache of an https destination: sessions are resumed on
/// new connections (saving the full handshake), until a collector shows it
/// cannot resume them. Fluentd's TLS server (Ruby OpenSSL without a session
/// id context, seen with 1.16.11) aborts every resumed handshake with an
/// `internal_error` alert ("session id context uninitialized"); after one
/// handshake that offered a session fails, [`Sessions::refused`] turns
/// resumption off for good and the request goes again at once with a full
/// handshake.
#[derive(Debug)]
pub struct Sessions {
    cache: rustls::client::ClientSessionMemoryCache,
    resume: std::sync::atomic::AtomicBool,
    /// Sessions handed out for handshakes since the last request that was
    /// answered.
    offered: std::sync::atomic::AtomicUsize,
}

impl Sessions {
    /// Puts a resuming session store into `config`, and returns it.
    pub fn install(config: &mut rustls::ClientConfig) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions {
            cache: rustls::client::ClientSessionMemoryCache::new(256),
            resume: true.into(),
            offered: 0.into(),
        });
        config.resumption = rustls::client::Resumption::store(sessions.clone());
        sessions
    }

    /// After a failed TLS handshake: Some when that handshake may have
    /// offered a session to resume (resumption is then off from now on, and
    /// the attempt is worth repeating at once), holding true the first time.
    pub fn refused(&self) -> Option<bool> {
        use std::sync::atomic::Ordering;
        self.offered
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()?;
        Some(self.resume.swap(false, Ordering::Relaxed))
    }

    /// A request was answered: the sessions offered so far were taken.
    pub fn answered(&self) {
        self.offered.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn resuming(&self) -> bool {
        self.resume.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn offer<T>(&self, session: Option<T>) -> Option<T> {
        if session.is_some() {
            self.offered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        session
    }
}

impl rustls::client::ClientSessionStore for Sessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.cache.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.cache.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        if self.resuming() {
            self.cache.set_tls12_session(server_name, value)
        }
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        if !self.resuming() {
            return None;
        }
        self.offer(self.cache.tls12_session(server_name))
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        if self.resuming() {
            self.cache.insert_tls13_ticket(server_name, value)
        }
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        if !self.resuming() {
            return None;
        }
        self.offer(self.cache.take_tls13_ticket(server_name))
    }
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

/// The verifier of an https destination that verifies its certificate:
/// webpki against the system roots and `ca_file`, as always; and, where
/// webpki refuses a certificate only because it is a CA certificate
/// presented as the server's own (rustls/webpki#205: a self-signed
/// collector certificate made with `openssl req -x509`, whose basic
/// constraints say CA:TRUE, put in `ca_file`), acceptance when that very
/// certificate, byte for byte, is in `ca_file` and names the host.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of `ca_file`, as they are.
    pinned: Vec<CertificateDer<'static>>,
    /// `tls.server_name`: the name to verify instead of the url's host.
    server_name: Option<ServerName<'static>>,
}

/// Why a certificate was refused where rustls has no word of its own; it
/// travels in `CertificateError::Other` and [`describe`] puts it in words.
#[derive(Debug)]
enum Refused {
    /// A self-signed certificate that is not in `ca_file`.
    SelfSignedNotInCaFile,
    /// A CA certificate (CA:TRUE) signed by another, presented as the
    /// server's own and not in `ca_file`.
    CaAsServerCertificate,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe_refused(self))
    }
}

impl std::error::Error for Refused {}

fn refused(r: Refused) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(r),
    )))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let server_name = self.server_name.as_ref().unwrap_or(server_name);
        let err = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => return Ok(ok),
            Err(e) => e,
        };
        if !is_ca_used_as_end_entity(&err) {
            return Err(err);
        }
        // webpki checks the validity period before the basic constraints,
        // so a certificate refused as CA:TRUE is within its validity period
        // (an expired one is refused as expired, with its dates; the tests
        // of an expired pinned certificate hold webpki to that order).
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(if cert.issuer() == cert.subject() {
                refused(Refused::SelfSignedNotInCaFile)
            } else {
                refused(Refused::CaAsServerCertificate)
            });
        }
        // The pinned certificate: as trusted as ca_file itself; it must still
        // name the host (or tls.server_name).
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| match e {
                webpki::Error::CertNotValidForName(ctx) => rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext {
                        expected: ctx.expected,
                        presented: ctx.presented,
                    },
                ),
                _ => rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
            })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))
        if matches!(o.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity)))
}

/// A certificate time as an HTTP date (`Tue, 01 Dec 2026 10:00:00 GMT`).
fn date(t: UnixTime) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs()))
}

/// webpki's `DnsName("a")` / `IpAddress(1.2.3.4)` as `a` / `1.2.3.4`.
fn presented_name(n: &str) -> String {
    n.strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .or_else(|| {
            n.strip_prefix("IpAddress(")
                .and_then(|r| r.strip_suffix(')'))
        })
        .unwrap_or(n)
        .to_string()
}

fn server_name_str(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

fn describe_refused(r: &Refused) -> String {
    match r {
        Refused::SelfSignedNotInCaFile => "the collector presents a self-signed certificate that is not in ca_file (nor signed by a CA in it): put the collector's own certificate (for Fluentd, the cert_path file of <transport tls>) in ca_file".into(),
        Refused::CaAsServerCertificate => "the collector presents a CA certificate (basic constraints CA:TRUE) as its own server certificate: give the collector a server certificate signed by that CA, or put that very certificate in ca_file".into(),
    }
}

/// A client handshake failure in words a person can act on: what is wrong
/// and what to do about it. No rustls or webpki debug name reaches the user.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::AlertDescription as A;
    use rustls::CertificateError as C;
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "unknown CA: the collector's certificate is not signed by a CA in ca_file or in the system's trust store (set ca_file to the PEM of the CA that signed it, or, for a self-signed certificate, to the certificate itself; verify_certificate = false skips the check)".into()
            }
            C::BadSignature => {
                "the collector's certificate names a CA in ca_file as its issuer but was not signed by that CA's key (was the CA made again under the same name?): set ca_file to the CA that really signed it".into()
            }
            C::NotValidForNameContext { expected, presented } => {
                let names: Vec<String> = presented.iter().map(|n| presented_name(n)).collect();
                let holds = if names.is_empty() {
                    "names no host (it has no subjectAltName)".to_string()
                } else {
                    format!("is for {}", names.join(", "))
                };
                format!(
                    "the collector's certificate {holds}, not for {}: use one of those names in the url, or set tls.server_name to the one the collector goes by, or give the collector a certificate that names {}",
                    server_name_str(expected),
                    server_name_str(expected)
                )
            }
            C::NotValidForName => {
                "the collector's certificate does not name the host in the url: use a name the certificate holds, or set tls.server_name".into()
            }
            C::ExpiredContext { time, not_after } => format!(
                "the collector's certificate expired on {} (it is now {}): renew the collector's certificate (or check this machine's clock)",
                date(*not_after),
                date(*time)
            ),
            C::Expired => "the collector's certificate has expired: renew it (or check this machine's clock)".into(),
            C::NotValidYetContext { time, not_before } => format!(
                "the collector's certificate is not valid until {} (it is now {}): check the clocks of this machine and of the machine that made the certificate",
                date(*not_before),
                date(*time)
            ),
            C::NotValidYet => "the collector's certificate is not valid yet: check the clocks".into(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "the collector's certificate is not for a server (its extended key usage lacks serverAuth): give the collector a server certificate".into()
            }
            C::Revoked => "the collector's certificate has been revoked: give it a new one".into(),
            C::BadEncoding => "the collector's certificate cannot be parsed (bad encoding)".into(),
            C::Other(o) => {
                if let Some(r) = o.0.downcast_ref::<Refused>() {
                    describe_refused(r)
                } else if let Some(w) = o.0.downcast_ref::<webpki::Error>() {
                    match w {
                        webpki::Error::CaUsedAsEndEntity => describe_refused(&Refused::CaAsServerCertificate),
                        webpki::Error::EndEntityUsedAsCa => "the collector's certificate chain uses a server certificate as a CA: set ca_file to the CA that signed the server certificate".into(),
                        other => format!("the collector's certificate was refused ({other:?}): check it with `openssl x509 -text -noout -in FILE`"),
                    }
                } else {
                    format!("the collector's certificate was refused: {}", o.0)
                }
            }
            other => format!("the collector's certificate was refused ({other:?}): check it with `openssl x509 -text -noout -in FILE`"),
        },
        E::AlertReceived(A::CertificateRequired) => {
            "the server requires a client certificate (set client_cert_file and client_key_file)".into()
        }
        E::AlertReceived(
            a @ (A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::UnsupportedCertificate),
        ) => format!("the server did not accept our client certificate (it answered {a:?}): use a client certificate signed by a CA the collector trusts (Fluentd: client_cert_auth with ca_path)"),
        E::AlertReceived(A::AccessDenied) => {
            "the collector denied access (TLS alert access_denied): it refused our client certificate, or it has no certificate for the name we asked for (SNI): check client_cert_file and client_key_file, and set tls.server_name to the name of the collector's certificate".into()
        }
        E::AlertReceived(A::UnrecognisedName) => {
            "the collector has no certificate for the name we asked for (SNI): set tls.server_name to the name of the collector's certificate, or use that name in the url".into()
        }
        E::AlertReceived(A::HandshakeFailure) => {
            "the collector refused the handshake: no TLS version and cipher suite in common, or it requires a client certificate (tailhook speaks TLS 1.2 and 1.3 with ECDHE AEAD ciphers; check the collector's min_version and ciphers, and set client_cert_file and client_key_file if it asks for one)".into()
        }
        E::AlertReceived(A::ProtocolVersion) => {
            "no TLS version in common: the collector refused TLS 1.2 and 1.3 (tailhook speaks only those): allow TLSv1_2 or TLSv1_3 at the collector (Fluentd: <transport tls> min_version/max_version)".into()
        }
        E::AlertReceived(A::InsufficientSecurity) => {
            "no cipher suite in common: the collector wants ciphers tailhook does not offer (ECDHE with AES-GCM or ChaCha20-Poly1305): allow those at the collector".into()
        }
        E::AlertReceived(a) => format!("the collector ended the handshake with the alert {a:?}"),
        E::PeerIncompatible(p) => format!(
            "no TLS version or cipher suite in common with the collector ({p:?}): tailhook speaks TLS 1.2 and 1.3 with ECDHE AEAD ciphers; allow those at the collector"
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the collector did not answer in TLS: it is probably plain HTTP; use an http:// url, or turn TLS on at the collector (Fluentd: <transport tls>; Logstash: ssl_enabled => true)".into()
        }
        E::NoCertificatesPresented => "the collector presented no certificate".into(),
        E::Other(o) => format!("TLS error: {}", o.0),
        other => other.to_string(),
    }
}
