//! Cutting a byte stream (a socket, stdin, a datagram) into complete lines
//! for the spool, without holding more than `max_line_bytes` of one line.
//!
//! A line longer than that keeps its first `max_line_bytes + 1` bytes, so
//! that the pipelines reading the spool see it as too long and apply the
//! source's `on_invalid` to it, and the rest of it is skipped as it arrives.

use bytes::{BufMut, Bytes, BytesMut};

/// How much room a read gets.
pub const READ_BYTES: usize = 64 * 1024;

/// Bytes read but not yet cut into lines.
pub struct LineBuffer {
    buf: BytesMut,
    max_line: usize,
    skipping: bool,
    /// Lines cut short so far (for the log).
    pub cut: u64,
}

impl LineBuffer {
    /// A buffer for lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> LineBuffer {
        LineBuffer {
            buf: BytesMut::new(),
            max_line,
            skipping: false,
            cut: 0,
        }
    }

    /// The buffer to read into, with room for one read.
    pub fn space(&mut self) -> &mut BytesMut {
        self.buf.reserve(READ_BYTES);
        &mut self.buf
    }

    /// Takes the complete lines read so far, each ending in `\n`.
    pub fn take(&mut self) -> Option<Bytes> {
        if self.skipping {
            match memchr::memchr(b'\n', &self.buf) {
                None => {
                    self.buf.clear();
                    return None;
                }
                Some(i) => {
                    let _ = self.buf.split_to(i + 1);
                    self.skipping = false;
                }
            }
        }
        let mut out = match memchr::memrchr(b'\n', &self.buf) {
            Some(last) => {
                let lines = self.buf.split_to(last + 1);
                if lines.len() > self.max_line + 1 {
                    self.cut_long_lines(lines)
                } else {
                    lines
                }
            }
            None => BytesMut::new(),
        };
        if self.buf.len() > self.max_line {
            // An unfinished line already too long: keep its start, skip the rest.
            out.extend_from_slice(&self.buf[..self.max_line + 1]);
            out.put_u8(b'\n');
            self.buf.clear();
            self.skipping = true;
            self.cut += 1;
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    /// True when nothing of an unfinished line is held (after [`take`]):
    /// what was read so far ended at a line boundary.
    ///
    /// [`take`]: LineBuffer::take
    pub fn at_line_start(&self) -> bool {
        self.buf.is_empty() && !self.skipping
    }

    /// At the end of the stream: the unfinished last line, if it holds
    /// anything, as a line of its own (a sender that closes without a final
    /// newline still delivers its last line; a torn one is invalid and
    /// handled by `on_invalid`).
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.buf);
        if self.skipping || rest.iter().all(|b| b.is_ascii_whitespace()) {
            return None;
        }
        let mut line = rest;
        line.put_u8(b'\n');
        Some(line.freeze())
    }

    fn cut_long_lines(&mut self, lines: BytesMut) -> BytesMut {
        let mut out = BytesMut::with_capacity(lines.len());
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &lines) {
            if nl - start > self.max_line {
                out.extend_from_slice(&lines[start..start + self.max_line + 1]);
                out.put_u8(b'\n');
                self.cut += 1;
            } else {
                out.extend_from_slice(&lines[start..=nl]);
            }
            start = nl + 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lb: &mut LineBuffer, data: &[u8]) -> Vec<u8> {
        lb.space().extend_from_slice(data);
        lb.take().map(|b| b.to_vec()).unwrap_or_default()
    }

    #[test]
    fn complete_lines_pass_and_a_partial_waits() {
        let mut lb = LineBuffer::new(100);
        assert_eq!(feed(&mut lb, b"{\"a\":1}\n{\"b\""), b"{\"a\":1}\n");
        assert_eq!(feed(&mut lb, b":2}\n"), b"{\"b\":2}\n");
        assert!(lb.at_line_start());
        assert_eq!(feed(&mut lb, b"{\"c\":3}"), b"");
        assert!(!lb.at_line_start());
        assert_eq!(lb.finish().unwrap().as_ref(), b"{\"c\":3}\n");
        assert!(lb.finish().is_none());
    }

    #[test]
    fn long_lines_keep_one_byte_over_the_limit() {
        let mut lb = LineBuffer::new(4);
        assert_eq!(feed(&mut lb, b"ab\n0123456789\ncd\n"), b"ab\n01234\ncd\n");
        assert_eq!(feed(&mut lb, b"0123456"), b"01234\n");
        assert_eq!(feed(&mut lb, b"789"), b"");
        assert!(
            !lb.at_line_start(),
            "the rest of a long line is still to skip"
        );
        assert_eq!(feed(&mut lb, b"9\nok\n"), b"ok\n");
        assert_eq!(lb.cut, 2);
        assert!(lb.finish().is_none());
    }
}
