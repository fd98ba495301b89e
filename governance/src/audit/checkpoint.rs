//! C2SP `tlog-checkpoint` bodies: the note text a log signs.
//!
//! ```text
//! <origin>
//! <tree size, decimal, no leading zeros>
//! <base64 root hash>
//! [<extension line>…]
//! ```
//!
//! Every line ends in a newline; the origin and extension lines are
//! non-empty.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::Hash;
use super::merkle::TreeHead;
use super::note::{NoteError, NoteSigner};

/// The most extension lines accepted.
pub const MAX_EXTENSIONS: usize = 16;

/// A checkpoint: a log's origin and tree head, and optional extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `node.example/audit`.
    pub origin: String,
    /// Tree size and root.
    pub tree: TreeHead,
    /// Extension lines (opaque, without their newlines).
    pub extensions: Vec<String>,
}

/// Why a checkpoint body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Fewer than three lines, or the text does not end in a newline.
    #[error("a checkpoint is at least three newline-terminated lines")]
    TooFewLines,
    /// The origin line is empty.
    #[error("the origin line is empty")]
    EmptyOrigin,
    /// The size line is not a decimal number without leading zeros that fits in 64 bits.
    #[error("the tree size line is not a decimal u64 without leading zeros")]
    BadSize,
    /// The root line is not the base64 of 32 bytes.
    #[error("the root hash line is not the base64 of 32 bytes")]
    BadRoot,
    /// An extension line is empty, or holds a newline or control character.
    #[error("extension line {0} is empty or holds a control character")]
    BadExtension(usize),
    /// More than [`MAX_EXTENSIONS`] extension lines.
    #[error("more than {MAX_EXTENSIONS} extension lines")]
    TooManyExtensions,
    /// The origin holds a newline or control character.
    #[error("the origin holds a control character")]
    BadOrigin,
    /// Signing failed.
    #[error(transparent)]
    Note(#[from] NoteError),
}

fn clean_line(s: &str) -> bool {
    !s.is_empty() && !s.bytes().any(|b| b < 0x20)
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: &str, tree: TreeHead) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            tree,
            extensions: Vec::new(),
        }
    }

    /// The note text.
    ///
    /// # Errors
    /// [`CheckpointError::EmptyOrigin`], [`CheckpointError::BadOrigin`],
    /// [`CheckpointError::BadExtension`] or [`CheckpointError::TooManyExtensions`].
    pub fn body(&self) -> Result<String, CheckpointError> {
        if self.origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        if !clean_line(&self.origin) {
            return Err(CheckpointError::BadOrigin);
        }
        if self.extensions.len() > MAX_EXTENSIONS {
            return Err(CheckpointError::TooManyExtensions);
        }
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree.size,
            B64.encode(self.tree.root)
        );
        for (i, e) in self.extensions.iter().enumerate() {
            if !clean_line(e) {
                return Err(CheckpointError::BadExtension(i));
            }
            out.push_str(e);
            out.push('\n');
        }
        Ok(out)
    }

    /// The signed note: body, blank line, the log's signature line.
    ///
    /// # Errors
    /// As [`Checkpoint::body`].
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        Ok(signer.sign_note(&self.body()?)?)
    }

    /// Parses a note text as a checkpoint.
    ///
    /// # Errors
    /// The first [`CheckpointError`] found.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::TooFewLines)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::TooFewLines);
        };
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        if !clean_line(origin) {
            return Err(CheckpointError::BadOrigin);
        }
        let size = parse_size(size)?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::BadRoot)?;
        let mut extensions = Vec::new();
        for (i, e) in lines.enumerate() {
            if extensions.len() >= MAX_EXTENSIONS {
                return Err(CheckpointError::TooManyExtensions);
            }
            if !clean_line(e) {
                return Err(CheckpointError::BadExtension(i));
            }
            extensions.push(e.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            tree: TreeHead { size, root },
            extensions,
        })
    }
}

fn parse_size(s: &str) -> Result<u64, CheckpointError> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !ok {
        return Err(CheckpointError::BadSize);
    }
    s.parse().map_err(|_| CheckpointError::BadSize)
}

/// When a log signs its next checkpoint: every `every_events` records or
/// every `every_ms` milliseconds, whichever comes first, and only when the
/// log grew since the last one. Times are inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSchedule {
    /// Records since the last checkpoint that make the next one due (≥ 1).
    pub every_events: u64,
    /// Milliseconds since the last checkpoint that make the next one due,
    /// if the log grew.
    pub every_ms: u64,
}

impl CheckpointSchedule {
    /// Whether a checkpoint of `size` records is due at `now_ms`, the last
    /// one having covered `last_size` records at `last_ms` (for a log never
    /// checkpointed: size 0, at the time it was opened).
    pub fn due(&self, last_size: u64, last_ms: u64, size: u64, now_ms: u64) -> bool {
        size > last_size
            && (size - last_size >= self.every_events.max(1)
                || now_ms.saturating_sub(last_ms) >= self.every_ms)
    }

    /// How long after `now_ms` the time rule can next make a checkpoint due
    /// (0: it may be due now).
    pub fn wait_ms(&self, last_ms: u64, now_ms: u64) -> u64 {
        self.every_ms.saturating_sub(now_ms.saturating_sub(last_ms))
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_due_by_count_or_time_and_only_when_the_log_grew() {
        let s = CheckpointSchedule {
            every_events: 1000,
            every_ms: 10_000,
        };
        // Nothing new: never due, however long ago.
        assert!(!s.due(5, 0, 5, 1_000_000));
        // By count.
        assert!(!s.due(0, 0, 999, 1));
        assert!(s.due(0, 0, 1000, 1));
        assert!(s.due(10, 0, 1010, 1));
        // By time, once grown.
        assert!(!s.due(10, 1_000, 11, 10_999));
        assert!(s.due(10, 1_000, 11, 11_000));
        // A clock that went back does not make one due.
        assert!(!s.due(10, 5_000, 11, 1_000));
        assert_eq!(s.wait_ms(1_000, 4_000), 7_000);
        assert_eq!(s.wait_ms(1_000, 40_000), 0);
        // every_events 0 is treated as 1.
        let eager = CheckpointSchedule {
            every_events: 0,
            every_ms: u64::MAX,
        };
        assert!(eager.due(3, 0, 4, 0));
        assert!(!eager.due(4, 0, 4, 0));
    }
}
