//! A file taken for a copy of another open file, as copytruncate makes one:
//! it starts with the same bytes and grows as a prefix of the original. It
//! is not read while it waits for the original to be truncated; then it is
//! read from where the original had been read.

use std::fs::File;
use std::time::Instant;

use crate::checkpoint::FileId;

/// What is known of a file while it is taken for a copy.
#[derive(Debug)]
pub struct CopyState {
    /// The original: the open file with the same first bytes.
    pub of: FileId,
    /// A handle on the original, to check what the copy grows by.
    pub src: File,
    /// How much of the copy has been checked to be the same as its original.
    pub len: u64,
    /// When it was taken for a copy.
    pub since: Instant,
}
