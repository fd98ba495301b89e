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
