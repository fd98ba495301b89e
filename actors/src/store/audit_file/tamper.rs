//! For tests: the audit file's bytes, to change them as someone holding the
//! file would (the store never changes a record once written).

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::AUDIT_FILE;
pub(crate) use super::frame::FRAME_HEAD;
use super::frame::{HEADER_LEN, encode};

/// The header's length.
pub(crate) const HEADER: usize = HEADER_LEN as usize;

/// The audit file of the store in `dir`.
pub(crate) fn file(dir: &Path) -> PathBuf {
    dir.join(AUDIT_FILE)
}

/// The audit file's bytes.
pub(crate) fn read(dir: &Path) -> Vec<u8> {
    std::fs::read(file(dir)).unwrap()
}

/// Replaces the file's contents (same file: an open store reads them).
pub(crate) fn write(dir: &Path, bytes: &[u8]) {
    std::fs::write(file(dir), bytes).unwrap();
}

/// Writes `bytes` over the file's at `at`.
pub(crate) fn patch(dir: &Path, at: usize, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file(dir))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, bytes, at as u64).unwrap();
}

/// Cuts the file to `len` bytes.
pub(crate) fn cut(dir: &Path, len: usize) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file(dir))
        .unwrap();
    f.set_len(len as u64).unwrap();
}

/// Each frame's bytes in a whole file, in order (lengths as written,
/// unchecked), up to the zeros written ahead of the log.
pub(crate) fn frames(bytes: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = HEADER;
    while at + FRAME_HEAD <= bytes.len() && bytes[at..at + FRAME_HEAD] != [0; FRAME_HEAD] {
        let word = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let end = at + FRAME_HEAD + (word & 0x7fff_ffff) as usize;
        out.push(at..end);
        at = end;
    }
    out
}

/// The record of a frame.
pub(crate) fn record(frame: &[u8]) -> &[u8] {
    &frame[FRAME_HEAD..]
}

/// Where the log's frames end in a whole file (zeros follow, if anything).
pub(crate) fn log_end(bytes: &[u8]) -> usize {
    let end = frames(bytes).last().map_or(HEADER, |f| f.end);
    assert!(
        bytes[end..].iter().all(|&b| b == 0),
        "only zeros follow the log"
    );
    end
}

/// Whether a frame ends its batch.
pub(crate) fn ends_batch(frame: &[u8]) -> bool {
    frame[3] & 0x80 != 0
}

/// The frame of `record`, ending a batch or not.
pub(crate) fn frame(record: &[u8], batch_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, record, batch_end);
    out
}

/// `frame` holding `record` instead, its checksum made to match (what
/// someone who knows the format writes).
pub(crate) fn reframe(frame_bytes: &[u8], record: &[u8]) -> Vec<u8> {
    frame(record, ends_batch(frame_bytes))
}
