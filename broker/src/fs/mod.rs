//! Jailed file operations: read, write, list and stat under one root
//! directory, for the broker's file tools.
//!
//! [`FsRoot::open`] opens the root directory once, with ambient
//! authority; every operation afterwards resolves its path through that
//! handle ([`cap_std::fs::Dir`]), never through a path string from `/`.
//! On Linux cap-std resolves with `openat2(RESOLVE_BENEATH)` (or a
//! component-by-component walk where that is missing), so neither `..`
//! nor a symlink — absolute, relative, chained — can lead out of the
//! root; such an attempt is [`FsError::EscapesRoot`]. Symlinks that stay
//! inside the root are followed.
//!
//! Before any I/O the caller's string passes the pure checks of
//! [`path::check`] (no absolute paths, no `..`, no NUL, no backslash,
//! length limits; nothing is percent-decoded).
//!
//! Guarantees:
//! - [`FsRoot::read`] returns only the bytes of a regular file inside the
//!   root, at most [`FsLimits::max_read_bytes`] of them, and never blocks
//!   on a FIFO (opened `O_NONBLOCK`, then refused by `fstat` on the opened
//!   handle, so a swap between check and open is caught too).
//! - [`FsRoot::write`] is atomic: a fresh temp file in the target's
//!   directory, fsynced, renamed over the target, directory fsynced. A
//!   reader sees the old file or the new one, never a part. A symlink at
//!   the final component is replaced by the rename, not written through.
//! - [`FsRoot::list`] returns at most [`FsLimits::max_list_entries`]
//!   entries and says when it truncated.
//! - [`FsRoot::stat`] never follows a final symlink.
//!
//! Not covered: hard links (a hard link inside the root to a file outside
//! it is the same file; only who can create links under the root decides
//! that), a root directory that is itself moved while open, and quotas or
//! disk space beyond the per-call byte limits.

mod ops;
pub mod path;

use std::io;

pub use ops::{Entry, FsRoot, Listing, Stat, WriteReceipt};

/// Per-call bounds of the file operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsLimits {
    /// The largest file [`FsRoot::read`] returns, in bytes.
    pub max_read_bytes: u64,
    /// The largest content [`FsRoot::write`] accepts, in bytes.
    pub max_write_bytes: u64,
    /// The most entries [`FsRoot::list`] returns.
    pub max_list_entries: usize,
    /// The longest relative path string accepted, in bytes.
    pub max_path_len: usize,
}

impl Default for FsLimits {
    /// 1 MiB reads and writes, 1,000 entries per listing, 4,096-byte paths.
    fn default() -> Self {
        Self {
            max_read_bytes: 1 << 20,
            max_write_bytes: 1 << 20,
            max_list_entries: 1000,
            max_path_len: 4096,
        }
    }
}

/// What a directory entry or path is, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A block or character device.
    Device,
    /// Anything else the platform reports.
    Other,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::File => "a regular file",
            Self::Dir => "a directory",
            Self::Symlink => "a symbolic link",
            Self::Fifo => "a named pipe",
            Self::Socket => "a socket",
            Self::Device => "a device",
            Self::Other => "a special file",
        })
    }
}

/// Why a file operation was refused or failed. Messages name the relative
/// path the caller gave, never the root's location.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The path string was empty.
    #[error("the path is empty: name a file relative to the root (`.` is the root itself)")]
    EmptyPath,
    /// The path string is longer than [`FsLimits::max_path_len`].
    #[error("the path is {len} bytes long, over the limit of {limit}")]
    PathTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// One component is longer than [`path::MAX_COMPONENT_LEN`].
    #[error("a component of `{path}` is over {limit} bytes long")]
    ComponentTooLong {
        /// The path given.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The path holds a NUL byte (shown as `\0`).
    #[error("the path `{path}` holds a NUL byte")]
    NulByte {
        /// The path given, NUL shown as `\0`.
        path: String,
    },
    /// The path holds a backslash.
    #[error("the path `{path}` holds a backslash: separate components with `/`")]
    Backslash {
        /// The path given.
        path: String,
    },
    /// The path is absolute.
    #[error("the path `{path}` is absolute: give it relative to the root")]
    AbsolutePath {
        /// The path given.
        path: String,
    },
    /// The path has a `..` component.
    #[error("the path `{path}` has a `..` component: name the file without going up")]
    ParentComponent {
        /// The path given.
        path: String,
    },
    /// The final component is reserved for the write's temp files.
    #[error("the name of `{path}` starts with `.mxp-tmp-`, which is reserved for temp files")]
    ReservedName {
        /// The path given.
        path: String,
    },
    /// Resolving the path (through a symlink) would leave the root.
    #[error("the path `{path}` leads outside the root (through a symbolic link)")]
    EscapesRoot {
        /// The path given.
        path: String,
    },
    /// Too many symlinks in a row, or a loop.
    #[error("the path `{path}` goes through too many symbolic links (or a loop)")]
    SymlinkLoop {
        /// The path given.
        path: String,
    },
    /// Nothing exists at the path.
    #[error("nothing exists at `{path}`")]
    NotFound {
        /// The path given.
        path: String,
    },
    /// The path (for a listing), or one of its parents, is not a directory.
    #[error("`{path}` or one of its parents is not a directory")]
    NotADirectory {
        /// The path given.
        path: String,
    },
    /// The path is not a regular file (read, write).
    #[error("`{path}` is {kind}, not a regular file")]
    NotRegularFile {
        /// The path given.
        path: String,
        /// What it is.
        kind: Kind,
    },
    /// The file or content is over the byte limit.
    #[error("`{path}` is {size} bytes or more, over the limit of {limit} bytes")]
    TooLarge {
        /// The path given.
        path: String,
        /// The size seen (at least this much).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The operating system refused access.
    #[error("access to `{path}` was denied ({op})")]
    PermissionDenied {
        /// The path given.
        path: String,
        /// The step that was refused.
        op: &'static str,
    },
    /// The root directory could not be opened.
    #[error("the root directory could not be opened: {source}")]
    OpenRoot {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("{op} `{path}` failed: {source}")]
    Io {
        /// The step that failed.
        op: &'static str,
        /// The path given.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}
