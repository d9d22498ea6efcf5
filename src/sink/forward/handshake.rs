//! The client side of `in_forward`'s `<security>` handshake, as Fluentd's
//! own `out_forward` does it (`out_forward/handshake_protocol.rb`) against
//! `in_forward.rb`:
//!
//! 1. the server, at once on a new connection:
//!    `["HELO", {"nonce": bytes, "auth": salt, "keepalive": bool}]` (the
//!    nonce and salt are 16 random bytes, sent as msgpack bin by Fluentd;
//!    str is taken too; `auth` is "" without user authentication);
//! 2. the client: `["PING", self_hostname, shared_key_salt,
//!    hex(sha512(shared_key_salt + self_hostname + nonce + shared_key)),
//!    username, hex(sha512(auth + username + password))]`, the last two ""
//!    when `auth` is "" (always six elements: `in_forward` refuses others);
//! 3. the server: `["PONG", ok, reason, server_hostname,
//!    hex(sha512(shared_key_salt + server_hostname + nonce + shared_key))]`,
//!    and when `ok` is false it closes the connection;
//! 4. the client refuses a PONG that is not ok, one whose hostname is its
//!    own `self_hostname` (Fluentd takes that for a configuration mistake),
//!    and one whose digest is wrong (a server that does not know the key).
//!
//! `keepalive: false` (`in_forward`'s `deny_keepalive true`) means the
//! server closes the connection after its first answer; Fluentd's client
//! ignores it, tailhook uses such a connection for one batch only.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::client::SendError;
use super::super::msgpack::{self, ReadError, Value};
use crate::config::ForwardSecurity;
use crate::sink::stream::Io;

/// What the server's HELO says.
#[derive(Debug, PartialEq)]
pub(super) struct Helo {
    nonce: Vec<u8>,
    /// The salt of user authentication ("" without it).
    auth: Vec<u8>,
    /// False: the server closes the connection after one answer.
    pub keepalive: bool,
}

/// Runs the handshake on a new connection within `left` (what remains of
/// `connect_timeout`); returns whether the connection may be used again.
pub(super) async fn run(
    io: &mut Box<dyn Io>,
    security: &ForwardSecurity,
    left: Duration,
    connect_timeout: Duration,
) -> Result<bool, SendError> {
    let deadline = tokio::time::Instant::now() + left;
    let mut buf = Vec::new();
    let helo = match tokio::time::timeout_at(deadline, read_value(io, &mut buf)).await {
        Err(_) => return Err(SendError::NoHelo(connect_timeout)),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => {
            return Err(SendError::Handshake(
                "the server closed the connection without sending HELO (if in_forward has <transport tls>, set transport = \"tls\"; Fluentd's log says why it closed it)".into(),
            ))
        }
        Ok(Ok(Some(v))) => parse_helo(&v)?,
    };
    let salt = new_salt()?;
    let ping = ping(security, &helo, &salt);
    let sent = async {
        io.write_all(&ping).await?;
        io.flush().await
    };
    sent.await
        .map_err(|e| SendError::Handshake(format!("sending PING failed: {e}")))?;
    let pong = match tokio::time::timeout_at(deadline, read_value(io, &mut buf)).await {
        Err(_) => {
            return Err(SendError::Handshake(format!(
                "no PONG within connect_timeout ({}) after our PING",
                crate::config::humanize_duration(connect_timeout)
            )))
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => return Err(SendError::Handshake(
            "the server closed the connection after our PING without answering PONG (Fluentd's log says why)".into(),
        )),
        Ok(Ok(Some(v))) => v,
    };
    check_pong(&pong, security, &helo, &salt)?;
    Ok(helo.keepalive)
}

/// Reads one MessagePack value; `None` when the server closed the
/// connection before a whole one came.
async fn read_value(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> Result<Option<Value>, SendError> {
    let mut chunk = [0u8; 1024];
    loop {
        match msgpack::read(buf) {
            Ok((Value::Nil, used)) => {
                buf.drain(..used);
                continue;
            }
            Ok((v, used)) => {
                buf.drain(..used);
                return Ok(Some(v));
            }
            Err(ReadError::Invalid(why)) => {
                return Err(SendError::Handshake(format!(
                    "the server's answer is not MessagePack ({why}); is this Fluentd's in_forward?"
                )))
            }
            Err(ReadError::Incomplete) => {}
        }
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| SendError::Handshake(format!("reading from the server failed: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 << 10 {
            return Err(SendError::Handshake(
                "the server's handshake message is over 64 KiB; is this Fluentd's in_forward?"
                    .into(),
            ));
        }
    }
}

/// A str or a bin, as Ruby reads both as a String.
fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Str(b) | Value::Bin(b) => Some(b),
        _ => None,
    }
}

/// `["HELO", {…}]`, or why not.
fn parse_helo(v: &Value) -> Result<Helo, SendError> {
    let bad = || {
        SendError::Handshake(
            "the server's first message is not in_forward's HELO; is this Fluentd's in_forward with <security>?".into(),
        )
    };
    let Value::Array(items) = v else {
        return Err(bad());
    };
    if items.len() != 2 || items.first().and_then(bytes_of) != Some(b"HELO".as_slice()) {
        return Err(bad());
    }
    // As Fluentd's client: a missing nonce or salt is "" (the digests then fail).
    let field = |key: &str| {
        items[1]
            .get(key)
            .and_then(bytes_of)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    };
    Ok(Helo {
        nonce: field("nonce"),
        auth: field("auth"),
        keepalive: !matches!(items[1].get("keepalive"), Some(Value::Bool(false))),
    })
}

/// Fluentd's salt: 16 random bytes as 32 hex digits.
fn new_salt() -> Result<String, SendError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| SendError::Handshake("no random bytes for the salt".into()))?;
    Ok(hex(&b))
}

/// Lower-case hex, as Ruby's `hexdigest`.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// hex(sha512(parts concatenated)).
fn digest(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    for p in parts {
        ctx.update(p);
    }
    hex(ctx.finish().as_ref())
}

/// The PING message.
fn ping(s: &ForwardSecurity, helo: &Helo, salt: &str) -> Vec<u8> {
    let key_digest = digest(&[
        salt.as_bytes(),
        s.self_hostname.as_bytes(),
        &helo.nonce,
        s.shared_key.as_bytes(),
    ]);
    let (user, password_digest) = if helo.auth.is_empty() {
        (String::new(), String::new())
    } else {
        let d = digest(&[&helo.auth, s.username.as_bytes(), s.password.as_bytes()]);
        (s.username.clone(), d)
    };
    let mut out = Vec::with_capacity(256);
    msgpack::write_len(&mut out, 6, 0x90, 0xdc);
    for item in [
        "PING",
        &s.self_hostname,
        salt,
        &key_digest,
        &user,
        &password_digest,
    ] {
        msgpack::write_str(&mut out, item);
    }
    out
}

/// Checks the PONG as Fluentd's client does, in its order.
fn check_pong(v: &Value, s: &ForwardSecurity, helo: &Helo, salt: &str) -> Result<(), SendError> {
    let items = match v {
        Value::Array(items)
            if items.len() == 5 && bytes_of(&items[0]) == Some(b"PONG".as_slice()) =>
        {
            items
        }
        _ => {
            return Err(SendError::Handshake(
                "the server answered our PING with something other than PONG; is this Fluentd's in_forward?".into(),
            ))
        }
    };
    let text = |v: &Value| String::from_utf8_lossy(bytes_of(v).unwrap_or_default()).into_owned();
    if items[1] != Value::Bool(true) {
        return Err(SendError::Handshake(refusal(&text(&items[2]), s)));
    }
    let server = bytes_of(&items[3]).unwrap_or_default();
    if server == s.self_hostname.as_bytes() {
        return Err(SendError::Handshake(format!(
            "in_forward's self_hostname is `{}`, the same as this destination's: Fluentd takes that for a configuration mistake (a server talking to itself); give tailhook another self_hostname (by default this machine's host name)",
            s.self_hostname
        )));
    }
    let want = digest(&[
        salt.as_bytes(),
        server,
        &helo.nonce,
        s.shared_key.as_bytes(),
    ]);
    if bytes_of(&items[4]) != Some(want.as_bytes()) {
        return Err(SendError::Handshake(format!(
            "the server's PONG digest is wrong: the server `{}` does not prove it knows the shared_key, so it is not the Fluentd expected (or not one with this shared_key); nothing was sent to it",
            String::from_utf8_lossy(server)
        )));
    }
    Ok(())
}

/// A PONG that says no, in words: Fluentd's reason and what to change.
fn refusal(reason: &str, s: &ForwardSecurity) -> String {
    match reason {
        "shared_key mismatch" => format!(
            "Fluentd refused the shared_key: {reason} (set shared_key to the shared_key of in_forward's <security>, or of its <client> section for this host)"
        ),
        "username/password mismatch" if s.username.is_empty() => format!(
            "Fluentd refused the handshake: {reason} (in_forward's <security> has user_auth true: set username and password to those of one of its <user> sections)"
        ),
        "username/password mismatch" => format!(
            "Fluentd refused the user `{}`: {reason} (set username and password to those of one of the <user> sections of in_forward's <security>)",
            s.username
        ),
        _ => format!("Fluentd refused the handshake: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(user: &str, password: &str) -> ForwardSecurity {
        ForwardSecurity {
            shared_key: "key".into(),
            self_hostname: "host".into(),
            username: user.into(),
            password: password.into(),
        }
    }

    fn s(b: &str) -> Value {
        Value::Str(b.as_bytes().to_vec())
    }

    #[test]
    fn digests_are_sha512_hex_of_the_parts_in_fluentds_order() {
        // printf 'salthostnoncekey' | sha512sum
        assert_eq!(
            digest(&[b"salt", b"host", b"nonce", b"key"]),
            "22ec4f9c36a2f046a7b4655800a5ddfb182586919b3cd9677fdec97a04c86982043491985b89d8ad2ca716289d8daf1521a9bd98ef009f54d9db291d83284e98"
        );
        assert_eq!(new_salt().unwrap().len(), 32);
        assert_ne!(new_salt().unwrap(), new_salt().unwrap());
    }

    #[test]
    fn helo_takes_str_or_bin_and_keepalive() {
        let helo = Value::Array(vec![
            s("HELO"),
            Value::Map(vec![
                (s("nonce"), Value::Bin(b"nonce".to_vec())),
                (s("auth"), s("auth")),
                (s("keepalive"), Value::Bool(false)),
            ]),
        ]);
        assert_eq!(
            parse_helo(&helo).unwrap(),
            Helo {
                nonce: b"nonce".to_vec(),
                auth: b"auth".to_vec(),
                keepalive: false
            }
        );
        let bare = Value::Array(vec![s("HELO"), Value::Nil]);
        assert_eq!(
            parse_helo(&bare).unwrap(),
            Helo {
                nonce: vec![],
                auth: vec![],
                keepalive: true
            }
        );
        let ack = Value::Map(vec![(s("ack"), s("x"))]);
        assert!(parse_helo(&ack)
            .unwrap_err()
            .to_string()
            .contains("not in_forward's HELO"));
    }

    #[test]
    fn ping_has_six_strings_and_the_password_digest_only_with_an_auth_salt() {
        let helo = |auth: &[u8]| Helo {
            nonce: b"nonce".to_vec(),
            auth: auth.to_vec(),
            keepalive: true,
        };
        let (v, _) = msgpack::read(&ping(&security("user", "pw"), &helo(b""), "salt")).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                s("PING"),
                s("host"),
                s("salt"),
                s(&digest(&[b"salt", b"host", b"nonce", b"key"])),
                s(""),
                s(""),
            ])
        );
        let (v, _) = msgpack::read(&ping(&security("user", "pw"), &helo(b"auth"), "salt")).unwrap();
        let Value::Array(items) = v else { panic!() };
        assert_eq!(items[4], s("user"));
        // printf 'authuserpw' | sha512sum
        assert_eq!(items[5], s("ec2ce49437d593abf6b61fe8d3f091498aeec7d843720bf02b7c873f097407fb3a06ea5ab090e2536f70048868ad86d8b06e1ddf50a0d704fb3e25b48bdee77a"));
        // Without a user, as Fluentd's client: "" and the digest of auth + "" + "".
        let (v, _) = msgpack::read(&ping(&security("", ""), &helo(b"auth"), "salt")).unwrap();
        let Value::Array(items) = v else { panic!() };
        assert_eq!(items[5], s(&digest(&[b"auth"])));
    }

    #[test]
    fn pong_is_checked_in_fluentds_order() {
        let sec = security("", "");
        let helo = Helo {
            nonce: b"nonce".to_vec(),
            auth: vec![],
            keepalive: true,
        };
        let pong = |ok: bool, reason: &str, host: &str, digest: &str| {
            Value::Array(vec![
                s("PONG"),
                Value::Bool(ok),
                s(reason),
                s(host),
                s(digest),
            ])
        };
        let good = digest(&[b"salt", b"fluentd", b"nonce", b"key"]);
        assert!(check_pong(&pong(true, "", "fluentd", &good), &sec, &helo, "salt").is_ok());
        let err = |v: Value| check_pong(&v, &sec, &helo, "salt").unwrap_err().to_string();
        assert!(err(pong(false, "shared_key mismatch", "", ""))
            .contains("Fluentd refused the shared_key: shared_key mismatch"));
        assert!(err(pong(false, "username/password mismatch", "", ""))
            .contains("user_auth true: set username and password"));
        assert!(err(pong(true, "", "host", &good)).contains("the same as this destination's"));
        assert!(err(pong(true, "", "fluentd", &good.replace('a', "b")))
            .contains("PONG digest is wrong"));
        assert!(err(Value::Array(vec![s("PONG")])).contains("something other than PONG"));
    }
}
