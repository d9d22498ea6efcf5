//! A hand-written HTTP/1.1 client for tailhook's `http` input: plain
//! requests over a `TcpStream`, so every status, header and byte is under
//! the test's control.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a request may take.
const WAIT: Duration = Duration::from_secs(30);

/// An answer as the sender sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Names lower-case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request with `Host`, `Connection: close` (unless `headers` sets
/// `Connection`) and (unless `headers` sets `Content-Length` or
/// `Transfer-Encoding`) the body's `Content-Length`.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if !framed {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|e| panic!("cannot connect to the http input at {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one answer: its head, then `Content-Length` bytes of body (tailhook
/// always sends one), so it does not depend on how the connection ends.
pub fn read_reply(stream: &mut impl Read) -> io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let fill = |stream: &mut dyn Read, buf: &mut Vec<u8>, chunk: &mut [u8]| -> io::Result<()> {
        let n = stream.read(chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {} bytes of an answer: {:?}",
                    buf.len(),
                    String::from_utf8_lossy(buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, &mut buf, &mut chunk)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().expect("numeric Content-Length"))
        .unwrap_or_else(|| panic!("answer without Content-Length: {head}"));
    while buf.len() < head_end + len {
        fill(stream, &mut buf, &mut chunk)?;
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub fn exchange(stream: &mut (impl Read + Write), request: &[u8]) -> io::Result<Reply> {
    stream.write_all(request)?;
    stream.flush()?;
    read_reply(stream)
}

/// Sends one request and reads its answer; panics on a transport error.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = connect(addr);
    exchange(&mut s, &request_bytes(method, path, headers, body))
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

pub const JSON: (&str, &str) = ("Content-Type", "application/json");

/// POST `body` to `/` as the Wallarm integration does.
pub fn post(addr: SocketAddr, body: &[u8]) -> Reply {
    send(addr, "POST", "/", &[JSON], body)
}
