//! `X-Tailhook-Batch-Id`: a name for a batch that a collector, or what is
//! behind it, can deduplicate on. It is derived only from what the batch
//! covers — the destination, and for each file (or spool segment) its
//! source, device and inode, fingerprint, and the offsets its part of the
//! batch starts and ends at — so a batch sent again (a retry, or the same
//! batch read again after a crash and a restart) carries the same id, and
//! different batches carry different ids. A part of a batch split after a
//! 413 is named by the batch's id and the events it holds.
//!
//! The hash is SHA-256 (from `ring`, already used for TLS), cut to its first
//! 128 bits and written as 32 lower-case hex digits: stable across builds,
//! platforms and versions, unlike `std`'s `DefaultHasher`.

use ring::digest::{Context, SHA256};

use crate::batch::Position;

/// The header's name.
pub const HEADER: &str = "x-tailhook-batch-id";

/// The id of a batch of `destination` that covers `positions`.
pub fn of_positions(destination: &str, positions: &[Position]) -> String {
    // A file the batch covers no bytes of (a spool segment just created, a
    // file found empty) may or may not join a batch depending on timing:
    // it does not name what the batch holds.
    let mut parts: Vec<_> = positions
        .iter()
        .filter(|p| p.start < p.offset)
        .map(|p| {
            (
                p.file.source.as_str(),
                p.file.id.dev,
                p.file.id.ino,
                p.fingerprint.len,
                p.fingerprint.hash,
                p.start,
                p.offset,
            )
        })
        .collect();
    // The order files appear in a batch depends on how reads interleave;
    // the id must not.
    parts.sort_unstable();
    let mut h = Context::new(&SHA256);
    field(&mut h, b"tailhook batch v1");
    field(&mut h, destination.as_bytes());
    for (source, dev, ino, fp_len, fp_hash, start, end) in parts {
        field(&mut h, source.as_bytes());
        for n in [dev, ino, u64::from(fp_len), fp_hash, start, end] {
            h.update(&n.to_be_bytes());
        }
    }
    hex128(h)
}

/// The id of a body sent with no positions behind it (`dead-letter resend`,
/// the `test` message): derived from the destination and the body's bytes.
pub fn of_body(destination: &str, body: &[u8]) -> String {
    let mut h = Context::new(&SHA256);
    field(&mut h, b"tailhook body v1");
    field(&mut h, destination.as_bytes());
    h.update(body);
    hex128(h)
}

/// The id of the part of batch `id` that holds its events `from..to`
/// (counted from 0, `to` not included).
pub fn part(id: &str, from: usize, to: usize) -> String {
    format!("{id}:{from}-{to}")
}

/// A length-prefixed field, so that adjacent fields cannot run together.
fn field(h: &mut Context, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn hex128(h: Context) -> String {
    h.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_ids_are_stable_hex_and_differ() {
        let a = of_body("d", b"[{}]");
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a, of_body("d", b"[{}]"));
        assert_ne!(a, of_body("e", b"[{}]"));
        assert_ne!(a, of_body("d", b"[{} ]"));
        assert_eq!(part(&a, 0, 5), format!("{a}:0-5"));
    }
}
