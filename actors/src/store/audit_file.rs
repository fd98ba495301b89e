//! The audit tree's engine: one append-only file, [`AUDIT_FILE`] in the
//! store's folder, of checksummed frames (its format: [`frame`]; docs/AUDIT.md,
//! "The audit file").
//!
//! * **A batch is one write and one `fdatasync`** (the group commit): its
//!   frames are written at the end of the log with one positioned write,
//!   then `File::sync_data`, before [`AuditFile::append`] returns. Its last
//!   frame carries the batch's end mark, so a batch cut short by a crash is
//!   recognised and cut off whole.
//! * **Only appends.** Records are keyed by consecutive sequence numbers
//!   ([`seq_key`]); a write that is not the next records, and any delete,
//!   is refused ([`WriteRefused`]).
//! * **Checked on open** ([`scan`]): every frame's length (against
//!   [`MAX_RECORD_BYTES`], before anything is allocated for it) and
//!   checksum. A torn write at the end (a bad or cut last frame, or frames
//!   after the last batch's end) is cut off and synced; a bad frame followed
//!   by a whole one is refused naming its record and offset, and nothing is
//!   changed.
//! * **Served by offset.** The index keeps the offset of every 64th frame
//!   (8 bytes per 64 records); a read walks at most 63 frames from the
//!   nearest one, with positioned reads (`pread`), checking each frame's
//!   checksum, and sees only records an append made durable. Readers do not
//!   wait for a writer's sync.
//! * **Made whole.** A new file is written (header and, from a store of the
//!   release before it, the audit records redb held) under
//!   `audit.log.new`, synced, linked into place and the folder synced, so a
//!   crash while it is made never leaves a half-made `audit.log`; then
//!   store.redb records that the store has its audit file, so a file that
//!   later goes missing is refused rather than started again empty.

mod frame;
mod scan;
#[cfg(test)]
pub(crate) mod tamper;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

pub use frame::{FrameFault, MAX_RECORD_BYTES};
pub(crate) use scan::SEARCH_WINDOW;
use scan::{Frames, Index, ScanFailure};

use super::audit_log::{AuditViolation, seq_key, seq_of_key};
use super::{Engine, Entry, Records, RedbEngine, StoreError, Tree};

/// The audit file, in the store's folder.
pub const AUDIT_FILE: &str = "audit.log";
/// What a new audit file is made under before it is linked into place.
const NEW_SUFFIX: &str = ".new";
/// The key in [`Tree::State`] that says this store made its audit file.
pub(super) const MADE_KEY: &[u8] = b"audit_file";
/// Records read from redb at a time when a store's log is moved into the file.
const MOVE_PAGE: usize = 1024;
/// Rows reserved up front for a read (more are added as they come).
const RESERVE: usize = 1024;
/// A write buffer larger than this is not kept between batches.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;
/// The file is written ahead with zeros to a multiple of this, so that a
/// batch overwrites bytes the file already has and its `fdatasync` writes
/// the data only, not a new file size too.
const GROW: u64 = 1024 * 1024;

/// A write to the audit tree that the audit file does not take (nothing
/// was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteRefused {
    /// A write that is not the next record: the log only appends.
    #[error("key {key} is not the next record ({next}): the audit log only appends")]
    NotNext {
        /// The next sequence number.
        next: u64,
        /// The key written, hex.
        key: String,
    },
    /// A delete: the log only appends.
    #[error("deleting key {key}: the audit log only appends")]
    Delete {
        /// The key, hex.
        key: String,
    },
    /// A record longer than a frame holds.
    #[error("record {seq} is {len} bytes, over the {limit} a record may hold")]
    TooLong {
        /// Its sequence number.
        seq: u64,
        /// Its length.
        len: usize,
        /// [`MAX_RECORD_BYTES`].
        limit: usize,
    },
}

/// What the writer keeps between batches.
#[derive(Debug, Default)]
struct Writer {
    /// A write or sync failed: what is on disk past the index is unknown.
    poisoned: bool,
    /// The frames of the batch being written.
    buf: Vec<u8>,
    /// The file's length: the log's end, then zeros written ahead.
    allocated: u64,
}

/// The audit file: see the module documentation.
#[derive(Debug)]
pub(crate) struct AuditFile {
    file: File,
    path: String,
    index: RwLock<Index>,
    writer: Mutex<Writer>,
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_error(path: &str, doing: &str, e: &std::io::Error) -> StoreError {
    StoreError::Engine {
        path: path.to_owned(),
        reason: format!("{doing}: {e}"),
    }
}

impl AuditFile {
    /// Opens the audit file of the store in `dir`, whose redb database
    /// `redb` is (open, so its lock keeps other openers out): creating it
    /// if the store has none yet, moving the audit records redb holds from
    /// a store of the release before it into it, then checking it
    /// ([`scan`]) and cutting off a torn write at its end.
    ///
    /// # Errors
    /// [`StoreError::AuditFileMissing`] if store.redb says the file was made
    /// and it is not there; [`StoreError::AuditInBoth`] if redb holds audit
    /// records the file does not; [`StoreError::AuditCorrupt`] naming the
    /// record and byte offset of a damaged frame inside the log (or, while
    /// moving redb's records, a record missing there);
    /// [`StoreError::Engine`] naming the file for a header that is not an
    /// audit file's and for I/O errors. A file that is refused is left as
    /// it was.
    pub(crate) fn open(dir: &Path, redb: &RedbEngine) -> Result<AuditFile, StoreError> {
        let file = dir.join(AUDIT_FILE);
        let path = file.display().to_string();
        let made = redb.get(Tree::State, MADE_KEY)?.is_some();
        // The records redb holds (the last one's sequence number + 1).
        let in_redb = redb
            .last(Tree::Audit)?
            .map(|(key, _)| seq_of_key(&key).map_or(u64::MAX, |s| s.saturating_add(1)));
        if let Some(records) = in_redb.filter(|_| made) {
            return Err(StoreError::AuditInBoth {
                path: redb.path().to_owned(),
                records,
            });
        }
        let exists = file
            .try_exists()
            .map_err(|e| io_error(&path, "looking for the file", &e))?;
        if !exists {
            if made {
                return Err(StoreError::AuditFileMissing { path });
            }
            create(&file, redb)?;
        }
        let audit = AuditFile::open_file(&file)?;
        // A move cut short after the file was linked: the file holds what
        // redb does (nothing was appended before the move was recorded).
        if let Some(records) = in_redb
            && records != audit.index().count
        {
            return Err(StoreError::AuditInBoth {
                path: redb.path().to_owned(),
                records,
            });
        }
        if !made {
            // Records the file is the store's audit log (and drops redb's
            // copy of a moved one) in one commit.
            redb.mark_audit_moved(MADE_KEY)?;
        }
        Ok(audit)
    }

    /// Opens and checks an existing audit file; cuts off a torn write.
    fn open_file(file: &Path) -> Result<AuditFile, StoreError> {
        let path = file.display().to_string();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .map_err(|e| io_error(&path, "opening the file", &e))?;
        let len = f
            .metadata()
            .map_err(|e| io_error(&path, "reading the file's length", &e))?
            .len();
        let scanned = scan::scan(&f, len).map_err(|failure| match failure {
            ScanFailure::Io(e) => io_error(&path, "reading the file", &e),
            ScanFailure::Header(reason) => StoreError::Engine {
                path: path.clone(),
                reason: format!(
                    "{reason}; an audit file is made whole, so this is damage: restore it \
                     from a backup, or move the store's folder aside to start a new, empty \
                     store. Nothing was changed"
                ),
            },
            ScanFailure::Damaged {
                seq,
                offset,
                fault,
                good_at,
            } => StoreError::AuditCorrupt {
                path: path.clone(),
                seq,
                violation: AuditViolation::Damaged {
                    offset,
                    fault,
                    good_at,
                },
            },
        })?;
        let mut allocated = len;
        if let Some((at, n)) = scanned.torn {
            f.set_len(at)
                .and_then(|()| f.sync_all())
                .map_err(|e| io_error(&path, "cutting off a torn write", &e))?;
            allocated = at;
            tracing::warn!(
                file = %path,
                at,
                bytes = n,
                records = scanned.index.count,
                "audit file: cut off a torn write at its end (a batch being written when the \
                 writer stopped, never acknowledged)"
            );
        }
        Ok(AuditFile {
            file: f,
            path,
            index: RwLock::new(scanned.index),
            writer: Mutex::new(Writer {
                allocated,
                ..Writer::default()
            }),
        })
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn damaged(&self, seq: u64, offset: u64, fault: FrameFault) -> StoreError {
        StoreError::AuditCorrupt {
            path: self.path.clone(),
            seq,
            violation: AuditViolation::Frame { offset, fault },
        }
    }

    fn refused(&self, refused: WriteRefused) -> StoreError {
        StoreError::AuditWriteRefused {
            path: self.path.clone(),
            refused,
        }
    }

    /// Appends `entries`, which must be the next records in order, as one
    /// batch: one write, one `fdatasync`, before this returns. A batch
    /// that goes past the zeros written ahead writes zeros after it, up to
    /// the next multiple of [`GROW`] bytes, in the same write.
    ///
    /// # Errors
    /// [`StoreError::AuditWriteRefused`] (nothing written) for a key that
    /// is not the next sequence number or a record over
    /// [`MAX_RECORD_BYTES`]; [`StoreError::Engine`] if the write or the sync
    /// fails, which may or may not have landed: the file then refuses every
    /// later write until the store is opened again.
    pub(crate) fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer.poisoned {
            return Err(StoreError::Engine {
                path: self.path.clone(),
                reason: "an earlier write to the file failed and may or may not have landed: \
                         open the store again"
                    .into(),
            });
        }
        // Only the writer changes the index, and it is this one.
        let (count, end) = {
            let index = self.index();
            (index.count, index.end)
        };
        let mut frames = Vec::with_capacity(entries.len());
        let buf = &mut writer.buf;
        buf.clear();
        for (i, (key, value)) in entries.iter().enumerate() {
            let seq = count.saturating_add(i as u64);
            if seq_of_key(key) != Some(seq) {
                return Err(self.refused(WriteRefused::NotNext {
                    next: seq,
                    key: hex(key),
                }));
            }
            if value.len() > MAX_RECORD_BYTES {
                return Err(self.refused(WriteRefused::TooLong {
                    seq,
                    len: value.len(),
                    limit: MAX_RECORD_BYTES,
                }));
            }
            let before = buf.len() as u64;
            frame::encode(buf, value, i + 1 == entries.len());
            frames.push((end + before, buf.len() as u64 - before));
        }
        // Past the zeros written ahead: more zeros after the frames.
        let stop = end + buf.len() as u64;
        let grow_to = (stop > writer.allocated).then(|| (stop / GROW + 1) * GROW);
        let buf = &mut writer.buf;
        if let Some(ahead) = grow_to {
            buf.resize(buf.len() + usize::try_from(ahead - stop).unwrap_or(0), 0);
        }
        let written = write_all_at(&self.file, buf, end)
            .map_err(|e| ("writing", e))
            .and_then(|()| self.file.sync_data().map_err(|e| ("syncing", e)));
        if buf.capacity() > KEEP_BUFFER {
            *buf = Vec::new();
        }
        if let Err((doing, e)) = written {
            writer.poisoned = true;
            return Err(io_error(&self.path, doing, &e));
        }
        if let Some(ahead) = grow_to {
            writer.allocated = ahead;
        }
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for (at, len) in frames {
            index.push(at, len);
        }
        Ok(())
    }

    /// Up to `limit` records from `from` on, in order. Fewer than asked
    /// (and at least one) when a damaged frame follows them: the next read,
    /// which starts at it, names it.
    ///
    /// # Errors
    /// [`StoreError::AuditCorrupt`] naming the record and offset of a
    /// damaged frame at `from` (or between it and the nearest indexed
    /// frame before it); [`StoreError::Engine`] for I/O errors.
    pub(crate) fn read(&self, from: u64, limit: usize) -> Result<Records, StoreError> {
        let (n, end, stop, (mut seq, mut at)) = {
            let index = self.index();
            if from >= index.count || limit == 0 {
                return Ok(Vec::new());
            }
            let Some(point) = index.point(from) else {
                return Err(StoreError::Engine {
                    path: self.path.clone(),
                    reason: format!("the index has no entry for record {from}"),
                });
            };
            let n = usize::try_from(index.count - from).map_or(limit, |left| left.min(limit));
            let last = from.saturating_add(n as u64 - 1);
            (n, index.end, index.end_after(last), point)
        };
        let mut out = Vec::with_capacity(n.min(RESERVE));
        let mut frames = Frames::new(&self.file, end).read_ahead_to(stop);
        while out.len() < n {
            let frame = frames
                .frame(at)
                .map_err(|e| io_error(&self.path, "reading the file", &e))?;
            match frame {
                Ok(frame) => {
                    if seq >= from {
                        out.push((seq_key(seq).to_vec(), frame.record.to_vec()));
                    }
                    at += frame.len;
                    seq += 1;
                }
                Err(fault) if out.is_empty() => return Err(self.damaged(seq, at, fault)),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// The record of `key`, if it is a sequence number the log holds.
    ///
    /// # Errors
    /// As [`AuditFile::read`].
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(seq) = seq_of_key(key) else {
            return Ok(None);
        };
        Ok(self.read(seq, 1)?.into_iter().next().map(|(_, v)| v))
    }

    /// Up to `limit` records whose keys are `from` or after, in order.
    ///
    /// # Errors
    /// As [`AuditFile::read`].
    pub(crate) fn range(&self, from: &[u8], limit: usize) -> Result<Records, StoreError> {
        match first_seq_from(from) {
            Some(seq) => self.read(seq, limit),
            None => Ok(Vec::new()),
        }
    }

    /// The last record.
    ///
    /// # Errors
    /// As [`AuditFile::read`].
    pub(crate) fn last(&self) -> Result<Option<Entry>, StoreError> {
        let (count, last, end) = {
            let index = self.index();
            (index.count, index.last, index.end)
        };
        let Some(seq) = count.checked_sub(1) else {
            return Ok(None);
        };
        let mut frames = Frames::new(&self.file, end);
        match frames
            .frame(last)
            .map_err(|e| io_error(&self.path, "reading the file", &e))?
        {
            Ok(frame) => Ok(Some((seq_key(seq).to_vec(), frame.record.to_vec()))),
            Err(fault) => Err(self.damaged(seq, last, fault)),
        }
    }

    /// Refuses: the log only appends.
    pub(crate) fn delete(&self, key: &[u8]) -> StoreError {
        self.refused(WriteRefused::Delete { key: hex(key) })
    }
}

/// The first sequence number whose key ([`seq_key`]: 8 bytes, big-endian)
/// is `from` or after it in byte order, if any.
fn first_seq_from(from: &[u8]) -> Option<u64> {
    // Its first 8 bytes, padded with zeros.
    let mut key = [0u8; 8];
    for (dst, src) in key.iter_mut().zip(from) {
        *dst = *src;
    }
    let head = u64::from_be_bytes(key);
    if from.len() > 8 {
        // The key of its first 8 bytes is before it (a prefix of it).
        head.checked_add(1)
    } else {
        Some(head)
    }
}

fn write_all_at(file: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, at)
    }
    #[cfg(windows)]
    {
        let mut done = 0usize;
        while let Some(rest) = buf.get(done..).filter(|r| !r.is_empty()) {
            match std::os::windows::fs::FileExt::seek_write(file, rest, at + done as u64) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Makes `file`: its header and the audit records `redb` holds (a store of
/// the release before the audit file), written and synced under a
/// temporary name, then linked into place and the folder synced.
fn create(file: &Path, redb: &RedbEngine) -> Result<(), StoreError> {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(NEW_SUFFIX);
    let new = file.with_file_name(name);
    let new_path = new.display().to_string();
    match std::fs::remove_file(&new) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&new_path, "removing the unfinished file", &e)),
    }
    if let Err(e) = write_new(&new, redb) {
        // Best effort: the next open replaces it anyway.
        let _ = std::fs::remove_file(&new);
        return Err(e);
    }
    std::fs::hard_link(&new, file).map_err(|e| io_error(&new_path, "linking into place", &e))?;
    std::fs::remove_file(&new).map_err(|e| io_error(&new_path, "removing", &e))?;
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty());
    let folder = folder.unwrap_or(Path::new("."));
    File::open(folder)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(&folder.display().to_string(), "syncing the folder", &e))
}

/// Writes and syncs `new`: the header, then `redb`'s audit records (one
/// batch per page read), checked to be consecutive from 0.
fn write_new(new: &Path, redb: &RedbEngine) -> Result<(), StoreError> {
    let new_path = new.display().to_string();
    let err = |doing: &str, e: std::io::Error| io_error(&new_path, doing, &e);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(new)
        .map_err(|e| err("creating", e))?;
    let mut out = std::io::BufWriter::new(f);
    out.write_all(&frame::header())
        .map_err(|e| err("writing", e))?;
    let mut next = 0u64;
    let mut buf = Vec::new();
    loop {
        let rows = redb.range(Tree::Audit, &seq_key(next), MOVE_PAGE)?;
        let n = rows.len();
        for (i, (key, value)) in rows.into_iter().enumerate() {
            if seq_of_key(&key) != Some(next) {
                return Err(StoreError::AuditCorrupt {
                    path: redb.path().to_owned(),
                    seq: next,
                    violation: AuditViolation::Missing,
                });
            }
            if value.len() > MAX_RECORD_BYTES {
                return Err(StoreError::AuditWriteRefused {
                    path: new_path.clone(),
                    refused: WriteRefused::TooLong {
                        seq: next,
                        len: value.len(),
                        limit: MAX_RECORD_BYTES,
                    },
                });
            }
            buf.clear();
            frame::encode(&mut buf, &value, i + 1 == n);
            out.write_all(&buf).map_err(|e| err("writing", e))?;
            next += 1;
        }
        if n < MOVE_PAGE {
            break;
        }
    }
    out.into_inner()
        .map_err(|e| err("writing", e.into_error()))?
        .sync_all()
        .map_err(|e| err("syncing", e))
}

#[cfg(test)]
#[path = "audit_file_tests.rs"]
mod tests;
