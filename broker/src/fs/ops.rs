//! The I/O of the jailed file operations: thin, every path through the
//! root's directory handle.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, FileType, FileTypeExt, Metadata, OpenOptions, OpenOptionsExt};

use super::path::{self, RelPath};
use super::{FsError, FsLimits, Kind};

/// Prefix of the temp files [`FsRoot::write`] creates next to its target.
const TMP_PREFIX: &str = ".mxp-tmp-";

/// A root directory the file operations are jailed in.
#[derive(Debug)]
pub struct FsRoot {
    dir: Dir,
    limits: FsLimits,
}

/// One entry of a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name (non-UTF-8 bytes replaced by U+FFFD).
    pub name: String,
    /// What it is; a symlink is reported as [`Kind::Symlink`], not followed.
    pub kind: Kind,
    /// Its size in bytes (of the link itself for a symlink).
    pub size: u64,
}

/// The entries of a directory, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// At most [`FsLimits::max_list_entries`] entries.
    pub entries: Vec<Entry>,
    /// Whether the directory held more entries than were returned (which
    /// ones were returned is then the directory's order, not the names').
    pub truncated: bool,
}

/// What [`FsRoot::stat`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// What the path is (a final symlink is not followed).
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch (`None` if the
    /// platform does not say or it is before 1970).
    pub modified_ms: Option<u64>,
    /// Whether its permissions forbid writing.
    pub readonly: bool,
}

/// What [`FsRoot::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReceipt {
    /// The bytes written.
    pub bytes: u64,
    /// Whether an existing file (or symlink) was replaced.
    pub replaced: bool,
}

impl FsRoot {
    /// Opens `root` (with ambient authority, once) as the jail.
    ///
    /// # Errors
    ///
    /// [`FsError::OpenRoot`] if `root` cannot be opened as a directory.
    pub fn open(root: &Path, limits: FsLimits) -> Result<Self, FsError> {
        let dir = Dir::open_ambient_dir(root, ambient_authority())
            .map_err(|source| FsError::OpenRoot { source })?;
        Ok(Self { dir, limits })
    }

    /// The limits this root enforces.
    pub fn limits(&self) -> FsLimits {
        self.limits
    }

    fn check(&self, rel: &str) -> Result<RelPath, FsError> {
        path::check(rel, self.limits.max_path_len)
    }

    /// Reads a regular file inside the root.
    ///
    /// Symlinks inside the root are followed; one leading out is refused.
    /// The file is opened non-blocking (and never as a controlling
    /// terminal) and its type is checked with `fstat` on the opened handle,
    /// so a FIFO, device, socket or directory is refused, also one swapped
    /// in after any earlier look, and nothing is read from it. A socket,
    /// which cannot be opened at all, is named as one.
    ///
    /// # Errors
    ///
    /// A path-check variant; [`FsError::EscapesRoot`];
    /// [`FsError::NotRegularFile`]; [`FsError::TooLarge`] if the file is
    /// over [`FsLimits::max_read_bytes`] (also if it grows past it while
    /// read); [`FsError::NotFound`], [`FsError::PermissionDenied`],
    /// [`FsError::Io`].
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, FsError> {
        let p = self.check(rel)?;
        let path = p.to_path();
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(read_flags());
        let file = match self.dir.open_with(&path, &opts) {
            Ok(f) => f,
            // A socket cannot be opened (ENXIO): name what it is.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                let meta = self
                    .dir
                    .metadata(&path)
                    .map_err(|e| map_io(e, "stat", rel))?;
                regular(rel, &meta)?;
                return Err(map_io(e, "open", rel));
            }
            Err(e) => return Err(map_io(e, "open", rel)),
        };
        let meta = file.metadata().map_err(|e| map_io(e, "stat", rel))?;
        regular(rel, &meta)?;
        let limit = self.limits.max_read_bytes;
        if meta.len() > limit {
            return Err(FsError::TooLarge {
                path: rel.to_owned(),
                size: meta.len(),
                limit,
            });
        }
        // Room for the whole file and the probe for its end: no regrowth.
        let hint = usize::try_from(meta.len().saturating_add(1)).unwrap_or(0);
        let mut buf = Vec::with_capacity(hint);
        file.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| map_io(e, "read", rel))?;
        let got = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        if got > limit {
            return Err(FsError::TooLarge {
                path: rel.to_owned(),
                size: got,
                limit,
            });
        }
        Ok(buf)
    }

    /// Writes `bytes` to a file inside the root, atomically.
    ///
    /// The size limit is checked before the disk is touched. The content
    /// goes to a fresh `.mxp-tmp-<random>` file in the target's directory
    /// (created exclusively), is fsynced, renamed over the target, and the
    /// directory is fsynced. The parent directory is opened once and every
    /// later step is relative to that handle, so swapping a parent for a
    /// symlink mid-write cannot redirect it. A symlink at the final
    /// component is replaced by the rename, never written through. On
    /// failure the temp file is removed.
    ///
    /// # Errors
    ///
    /// A path-check variant; [`FsError::TooLarge`];
    /// [`FsError::ReservedName`] for a name starting with `.mxp-tmp-`;
    /// [`FsError::NotRegularFile`] if the target exists and is neither a
    /// regular file nor a symlink (or is the root); [`FsError::EscapesRoot`]
    /// if a parent leads out; [`FsError::NotFound`] if the parent does not
    /// exist; [`FsError::PermissionDenied`], [`FsError::Io`].
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<WriteReceipt, FsError> {
        let p = self.check(rel)?;
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if size > self.limits.max_write_bytes {
            return Err(FsError::TooLarge {
                path: rel.to_owned(),
                size,
                limit: self.limits.max_write_bytes,
            });
        }
        let Some((parent, name)) = p.split_last() else {
            return Err(FsError::NotRegularFile {
                path: rel.to_owned(),
                kind: Kind::Dir,
            });
        };
        if name.starts_with(TMP_PREFIX) {
            return Err(FsError::ReservedName {
                path: rel.to_owned(),
            });
        }
        let parent = self
            .dir
            .open_dir(&parent)
            .map_err(|e| map_io(e, "open the directory of", rel))?;
        let replaced = match parent.symlink_metadata(name) {
            Ok(m) => {
                let kind = kind_of(m.file_type());
                if kind != Kind::File && kind != Kind::Symlink {
                    return Err(FsError::NotRegularFile {
                        path: rel.to_owned(),
                        kind,
                    });
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(map_io(e, "stat", rel)),
        };
        let tmp = create_temp(&parent, rel)?;
        let result = fill_and_rename(&parent, &tmp.0, tmp.1, name, bytes, rel);
        if result.is_err() {
            // Best effort: the rename may already have consumed it.
            let _ = parent.remove_file(&tmp.0);
        }
        result?;
        sync_dir(&parent, rel)?;
        Ok(WriteReceipt {
            bytes: size,
            replaced,
        })
    }

    /// Lists a directory inside the root (`.` is the root itself).
    ///
    /// Entries are not followed: a symlink is listed as
    /// [`Kind::Symlink`]. At most [`FsLimits::max_list_entries`] are
    /// returned; [`Listing::truncated`] says whether there were more.
    ///
    /// # Errors
    ///
    /// A path-check variant; [`FsError::EscapesRoot`];
    /// [`FsError::NotADirectory`]; [`FsError::NotFound`],
    /// [`FsError::PermissionDenied`], [`FsError::Io`].
    pub fn list(&self, rel: &str) -> Result<Listing, FsError> {
        let p = self.check(rel)?;
        let dir = self
            .dir
            .open_dir(p.to_path())
            .map_err(|e| map_io(e, "open the directory", rel))?;
        let max = self.limits.max_list_entries;
        let mut entries = Vec::new();
        let mut truncated = false;
        for entry in dir.entries().map_err(|e| map_io(e, "list", rel))? {
            let entry = entry.map_err(|e| map_io(e, "list", rel))?;
            if entries.len() == max {
                truncated = true;
                break;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry
                .file_type()
                .map(kind_of)
                .map_err(|e| map_io(e, "list", rel))?;
            // The entry may vanish between readdir and lstat: list it with size 0.
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            entries.push(Entry { name, kind, size });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Listing { entries, truncated })
    }

    /// Describes a path inside the root without following a final symlink
    /// (a symlink is reported as [`Kind::Symlink`], wherever it points).
    ///
    /// # Errors
    ///
    /// A path-check variant; [`FsError::EscapesRoot`] if a parent leads
    /// out; [`FsError::NotFound`], [`FsError::PermissionDenied`],
    /// [`FsError::Io`].
    pub fn stat(&self, rel: &str) -> Result<Stat, FsError> {
        let p = self.check(rel)?;
        let meta = match p.split_last() {
            None => self.dir.dir_metadata(),
            Some((parent, name)) => self
                .dir
                .open_dir(&parent)
                .and_then(|d| d.symlink_metadata(name)),
        }
        .map_err(|e| map_io(e, "stat", rel))?;
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok());
        Ok(Stat {
            kind: kind_of(meta.file_type()),
            size: meta.len(),
            modified_ms,
            readonly: meta.permissions().readonly(),
        })
    }
}

/// `O_NONBLOCK`, so opening a FIFO returns at once instead of waiting for
/// a writer.
fn nonblock_flag() -> i32 {
    // The flag's bits fit an i32 on every platform rustix supports.
    i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0)
}

/// Opening to read: non-blocking (a FIFO never waits for a writer) and
/// never as the process's controlling terminal.
fn read_flags() -> i32 {
    let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    i32::try_from(flags.bits()).unwrap_or_else(|_| nonblock_flag())
}

fn regular(rel: &str, meta: &Metadata) -> Result<(), FsError> {
    let kind = kind_of(meta.file_type());
    if kind == Kind::File {
        Ok(())
    } else {
        Err(FsError::NotRegularFile {
            path: rel.to_owned(),
            kind,
        })
    }
}

fn kind_of(t: FileType) -> Kind {
    if t.is_file() {
        Kind::File
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Symlink
    } else if t.is_fifo() {
        Kind::Fifo
    } else if t.is_socket() {
        Kind::Socket
    } else if t.is_block_device() || t.is_char_device() {
        Kind::Device
    } else {
        Kind::Other
    }
}

/// Creates a fresh temp file next to the target; retries on a name clash.
fn create_temp(parent: &Dir, rel: &str) -> Result<(String, cap_std::fs::File), FsError> {
    let rng = ring::rand::SystemRandom::new();
    let mut last = None;
    for _ in 0..8 {
        let mut raw = [0u8; 12];
        ring::rand::SecureRandom::fill(&rng, &mut raw).map_err(|_| FsError::Io {
            op: "draw a temp name for",
            path: rel.to_owned(),
            source: io::Error::other("the system random source failed"),
        })?;
        let mut name = String::from(TMP_PREFIX);
        for b in raw {
            name.push_str(&format!("{b:02x}"));
        }
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        match parent.open_with(&name, &opts) {
            Ok(f) => return Ok((name, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(map_io(e, "create a temp file for", rel)),
        }
    }
    Err(FsError::Io {
        op: "create a temp file for",
        path: rel.to_owned(),
        source: last.unwrap_or_else(|| io::Error::other("temp name clashes")),
    })
}

fn fill_and_rename(
    parent: &Dir,
    tmp: &str,
    mut file: cap_std::fs::File,
    name: &str,
    bytes: &[u8],
    rel: &str,
) -> Result<(), FsError> {
    file.write_all(bytes).map_err(|e| map_io(e, "write", rel))?;
    file.sync_all().map_err(|e| map_io(e, "sync", rel))?;
    drop(file);
    parent
        .rename(tmp, parent, name)
        .map_err(|e| map_io(e, "rename into", rel))
}

fn sync_dir(parent: &Dir, rel: &str) -> Result<(), FsError> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    let d = parent
        .open_with(".", &opts)
        .map_err(|e| map_io(e, "open the directory of", rel))?;
    d.sync_all()
        .map_err(|e| map_io(e, "sync the directory of", rel))
}

/// Maps an I/O error to the variant naming it. cap-std reports an escape
/// as `PermissionDenied` without an OS error code; a real `EACCES` has one.
fn map_io(e: io::Error, op: &'static str, rel: &str) -> FsError {
    let path = rel.to_owned();
    match e.kind() {
        io::ErrorKind::PermissionDenied if e.raw_os_error().is_none() => {
            FsError::EscapesRoot { path }
        }
        io::ErrorKind::PermissionDenied => FsError::PermissionDenied { path, op },
        io::ErrorKind::NotFound => FsError::NotFound { path },
        io::ErrorKind::NotADirectory => FsError::NotADirectory { path },
        _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            FsError::SymlinkLoop { path }
        }
        _ if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            FsError::EscapesRoot { path }
        }
        _ => FsError::Io {
            op,
            path,
            source: e,
        },
    }
}
