//! Client connections of the stream protocols (`type = "forward"` and
//! `type = "beats"`): TCP to
//! `host:port`, and the TLS handshake over it with `transport = "tls"`, within
//! `connect_timeout`, failures in the words of [`SendError`].

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::client::{SendError, SetupError};
use crate::config::DestinationConfig;

/// A connection: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open connection to a collector.
pub type Conn = Box<dyn Io>;

/// Opens connections to one `host:port`.
pub struct Connector {
    address: String,
    host: String,
    connect_timeout: Duration,
    /// With TLS: the client config and the name the server's certificate
    /// must hold (the host of the address).
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl Connector {
    /// A connector to `address`, with the destination's TLS settings when
    /// `tls` (reads its CA and client certificate files); `resume`: whether
    /// new connections may resume the TLS session of earlier ones.
    pub fn new(
        cfg: &DestinationConfig,
        address: &str,
        tls: bool,
        resume: bool,
    ) -> Result<Connector, SetupError> {
        let host = host_of(address);
        let tls = if tls {
            let mut config =
                crate::tls::client_config(cfg).map_err(|e| SetupError::new(&cfg.name, e))?;
            if !resume {
                config.resumption = rustls::client::Resumption::disabled();
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|e| SetupError::new(&cfg.name, format!("bad host name `{host}`: {e}")))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Connector {
            address: address.to_string(),
            host,
            connect_timeout: cfg.connect_timeout,
            tls,
        })
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A new connection: TCP, and the TLS handshake with TLS, within
    /// `connect_timeout`.
    pub async fn connect(&self) -> Result<Conn, SendError> {
        let attempt = async {
            let stream = self.connect_tcp().await?;
            let Some((config, name)) = &self.tls else {
                return Ok(Box::new(stream) as Conn);
            };
            let conn = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), stream)
                .await
                .map_err(|e| {
                    let why = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        .map_or_else(|| e.to_string(), crate::tls::describe);
                    SendError::Tls(why)
                })?;
            Ok(Box::new(conn) as Conn)
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .unwrap_or(Err(SendError::ConnectTimeout(self.connect_timeout)))
    }

    /// TCP to the first address the host resolves to that accepts.
    async fn connect_tcp(&self) -> Result<TcpStream, SendError> {
        let addrs: Vec<_> = tokio::net::lookup_host(&self.address)
            .await
            .map_err(|_| SendError::Dns(self.host.clone()))?
            .collect();
        let mut last = SendError::Dns(self.host.clone());
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = SendError::Refused
                }
                Err(e) => last = SendError::Other(e.to_string()),
            }
        }
        Err(last)
    }
}

/// The host of `host:port` (without the brackets of an IPv6 address).
pub fn host_of(address: &str) -> String {
    address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts() {
        assert_eq!(host_of("logstash:5044"), "logstash");
        assert_eq!(host_of("[::1]:5044"), "::1");
        assert_eq!(host_of("10.0.0.7:5044"), "10.0.0.7");
    }
}
