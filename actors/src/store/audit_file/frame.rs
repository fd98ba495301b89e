//! The audit file's bytes (docs/AUDIT.md, "The audit file"): a 12-byte
//! header, then one frame per record, in sequence order.
//!
//! ```text
//! header   = "MXPAUDIT" (8 bytes) ‖ version (u32 LE) = 1
//! frame    = word (u32 LE) ‖ checksum (u64 LE) ‖ record (word & 0x7fff_ffff bytes)
//! word     = the record's length (bits 0 to 30) | 0x8000_0000 on the last frame of a batch
//! checksum = XXH3-64 of the record, seeded with the word
//! ```
//!
//! The checksum covers the word through its seed, so a changed length or
//! batch mark fails it as a changed record byte does. A record is at most
//! [`MAX_RECORD_BYTES`], checked before anything is allocated for it.

use mxp_protocol::cursor::Reader;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The first bytes of every audit file.
pub(super) const MAGIC: [u8; 8] = *b"MXPAUDIT";
/// The format's version, after the magic.
pub(super) const VERSION: u32 = 1;
/// The header's length: magic and version.
pub(crate) const HEADER_LEN: u64 = 12;
/// A frame's bytes before its record: word and checksum.
pub(crate) const FRAME_HEAD: usize = 12;
/// The longest record a frame holds. The longest record an event within
/// the default [`mxp_governance::audit::Limits`] encodes to is about a
/// third of it (tested); a longer one is refused before it is written.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The word's bit that marks the last frame of a batch.
const BATCH_END: u32 = 1 << 31;

/// What is wrong with a frame of the audit file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameFault {
    /// Its word declares a record longer than [`MAX_RECORD_BYTES`] (or
    /// sets bits no length uses).
    #[error("it declares a record of {len} bytes, over the limit of {limit}")]
    TooLong {
        /// The declared length.
        len: u64,
        /// [`MAX_RECORD_BYTES`].
        limit: usize,
    },
    /// Its checksum does not match its word and record.
    #[error("its checksum does not match its bytes")]
    Checksum,
    /// The frame runs past the end of the file (or of the records the
    /// store committed): the file was cut, or a torn write left it short.
    #[error("it runs past the end of the log at byte {end}")]
    PastEnd {
        /// Where the bytes end.
        end: u64,
    },
}

/// The header every audit file starts with.
pub(super) fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    for (dst, src) in h.iter_mut().zip(MAGIC.iter().chain(&VERSION.to_le_bytes())) {
        *dst = *src;
    }
    h
}

/// Why `bytes` (the file's first [`HEADER_LEN`] bytes) are not a header,
/// said for an error message, or `None` if they are one.
pub(super) fn header_fault(bytes: &[u8]) -> Option<String> {
    let mut r = Reader::new(bytes, "audit file header");
    let (Ok(magic), Ok(version)) = (r.array::<8>(), r.u32_le()) else {
        return Some(format!(
            "the file is {} bytes, shorter than its {HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    if magic != MAGIC {
        return Some(format!(
            "the file does not start with {:?}: it is not an audit file",
            String::from_utf8_lossy(&MAGIC)
        ));
    }
    (version != VERSION).then(|| {
        format!("the file is of version {version}; this node reads version {VERSION} only")
    })
}

/// Appends the frame of `record` to `out`; `batch_end` marks the last frame
/// of a batch. The caller has checked `record.len() <= MAX_RECORD_BYTES`.
pub(crate) fn encode(out: &mut Vec<u8>, record: &[u8], batch_end: bool) {
    let len = u32::try_from(record.len()).unwrap_or(u32::MAX) & !BATCH_END;
    let word = if batch_end { len | BATCH_END } else { len };
    out.extend_from_slice(&word.to_le_bytes());
    out.extend_from_slice(&checksum(word, record).to_le_bytes());
    out.extend_from_slice(record);
}

fn checksum(word: u32, record: &[u8]) -> u64 {
    xxh3_64_with_seed(record, u64::from(word))
}

/// A frame's head, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    word: u32,
    checksum: u64,
}

impl Head {
    /// Reads the [`FRAME_HEAD`] bytes of a frame.
    pub(super) fn read(bytes: &[u8]) -> Option<Head> {
        let mut r = Reader::new(bytes, "audit frame");
        let word = r.u32_le().ok()?;
        let checksum = r.u64_le().ok()?;
        Some(Head { word, checksum })
    }

    /// The record's length, checked against [`MAX_RECORD_BYTES`].
    pub(super) fn len(self) -> Result<usize, FrameFault> {
        let len = self.word & !BATCH_END;
        usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_RECORD_BYTES)
            .ok_or(FrameFault::TooLong {
                len: u64::from(len),
                limit: MAX_RECORD_BYTES,
            })
    }

    /// Whether the frame is the last of its batch.
    pub(super) fn batch_end(self) -> bool {
        self.word & BATCH_END != 0
    }

    /// Checks `record` (the frame's [`Head::len`] bytes) against the checksum.
    pub(super) fn check(self, record: &[u8]) -> Result<(), FrameFault> {
        if checksum(self.word, record) == self.checksum {
            Ok(())
        } else {
            Err(FrameFault::Checksum)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_its_word_checksum_and_record_and_every_change_is_seen() {
        let mut out = Vec::new();
        encode(&mut out, b"record", false);
        encode(&mut out, b"", true);
        assert_eq!(out.len(), 2 * FRAME_HEAD + 6);
        assert_eq!(out[..4], 6u32.to_le_bytes());
        assert_eq!(
            out[4..12],
            xxh3_64_with_seed(b"record", 6).to_le_bytes(),
            "XXH3-64 seeded with the word"
        );
        let head = Head::read(&out[..12]).unwrap();
        assert_eq!(head.len(), Ok(6));
        assert!(!head.batch_end());
        head.check(b"record").unwrap();
        let end = Head::read(&out[18..30]).unwrap();
        assert_eq!(out[18..22], (1u32 << 31).to_le_bytes());
        assert!(end.batch_end());
        assert_eq!(end.len(), Ok(0));
        end.check(b"").unwrap();
        // Every bit of the frame matters: word, checksum and record.
        for bit in 0..18 * 8 {
            let mut bytes = out[..18].to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let head = Head::read(&bytes[..12]).unwrap();
            let seen = match head.len() {
                Err(FrameFault::TooLong { .. }) => true,
                Ok(len) => bytes
                    .get(12..12 + len)
                    .is_none_or(|r| head.check(r).is_err()),
                Err(other) => panic!("{other}"),
            };
            assert!(seen, "a flip of bit {bit} went unseen");
        }
        assert_eq!(Head::read(&out[..11]), None);
    }

    #[test]
    fn lengths_over_the_limit_are_refused_before_anything_is_read() {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&((MAX_RECORD_BYTES as u32) + 1).to_le_bytes());
        assert_eq!(
            Head::read(&bytes).unwrap().len(),
            Err(FrameFault::TooLong {
                len: MAX_RECORD_BYTES as u64 + 1,
                limit: MAX_RECORD_BYTES
            })
        );
        bytes[..4].copy_from_slice(&(MAX_RECORD_BYTES as u32 | 1 << 31).to_le_bytes());
        assert_eq!(Head::read(&bytes).unwrap().len(), Ok(MAX_RECORD_BYTES));
    }

    #[test]
    fn the_header_is_magic_and_version_and_anything_else_is_named() {
        let h = header();
        assert_eq!(&h, b"MXPAUDIT\x01\x00\x00\x00");
        assert_eq!(header_fault(&h), None);
        assert!(header_fault(&h[..11]).unwrap().contains("shorter"));
        assert!(header_fault(b"").unwrap().contains("0 bytes"));
        let mut other = h;
        other[0] = b'x';
        assert!(header_fault(&other).unwrap().contains("not an audit file"));
        other = h;
        other[8] = 2;
        assert!(header_fault(&other).unwrap().contains("version 2"));
    }
}
