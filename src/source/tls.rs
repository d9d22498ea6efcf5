//! The TLS handshake of a `tcp` or `http` input's connection (its
//! acceptor is built in [`crate::tls`]).

use tokio_rustls::TlsAcceptor;

/// How long a TLS client has to finish its handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Completes the server side of a TLS handshake within [`HANDSHAKE_TIMEOUT`];
/// a failure is logged with the source and peer, and gives None.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: tokio::net::TcpStream,
    source: &str,
    peer: &str,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::warn!(source, peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(source, peer, "TLS handshake timed out");
            None
        }
    }
}
