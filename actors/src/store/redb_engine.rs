//! The redb engine: one database file, one redb table per [`Tree`], every
//! write one write transaction committed with [`Durability::Immediate`]
//! (redb writes the pages, then fsyncs the file, before `commit` returns).

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    TableError,
};

use super::{Engine, Entry, Records, StoreError, Tree};

/// How long [`RedbEngine::open`] waits for the file lock of another opener
/// to go: long enough for a process being killed (or a store dropped a
/// moment ago on another thread) to let go of it, short enough that a store
/// another live opener keeps is refused promptly.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// How often the lock is tried again within [`LOCK_WAIT`].
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// redb's page cache, at most (redb's default is 1 GiB; the node's store is
/// read mostly at start and by audit queries, which page through it).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What a new database file is initialised under before it is linked into
/// place: `store.redb.new` beside `store.redb`.
const NEW_SUFFIX: &str = ".new";

/// Why one attempt to open the file failed.
enum Failure {
    /// Another opener holds the file's lock.
    Locked,
    /// Anything else, said for [`StoreError::Engine`]'s reason.
    Other(String),
}

impl Failure {
    fn opening(e: DatabaseError) -> Failure {
        let damaged = match &e {
            DatabaseError::DatabaseAlreadyOpen => return Failure::Locked,
            DatabaseError::Storage(redb::StorageError::Corrupted(_)) => true,
            DatabaseError::Storage(redb::StorageError::Io(io)) => matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ),
            _ => false,
        };
        Failure::Other(if damaged {
            format!(
                "opening the database: {e} (the file is damaged, cut short or not a store: \
                 restore it from a backup, or move the store's folder aside to start a new, \
                 empty store)"
            )
        } else {
            format!("opening the database: {e}")
        })
    }

    fn io(doing: &str, at: &Path, e: &std::io::Error) -> Failure {
        Failure::Other(format!("{doing} {}: {e}", at.display()))
    }
}

/// The builder every open uses: a bounded page cache, and the whole file's
/// integrity checked on open.
fn builder() -> redb::Builder {
    let mut builder = Database::builder();
    builder
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true);
    builder
}

/// Opens `file`, which must be a redb database (an empty file is refused).
fn open_existing(file: &Path) -> Result<Database, Failure> {
    builder().open(file).map_err(Failure::opening)
}

/// Makes `file` a new, empty, durable database: initialised and synced
/// under a temporary name, then hard-linked into place (which fails rather
/// than replace a `file` another opener made meanwhile, whose database is
/// then used), and the folder synced.
fn create(file: &Path) -> Result<(), Failure> {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(NEW_SUFFIX);
    let new = file.with_file_name(name);
    match std::fs::remove_file(&new) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::io("removing the unfinished", &new, &e)),
    }
    drop(builder().create(&new).map_err(Failure::opening)?);
    std::fs::File::open(&new)
        .and_then(|f| f.sync_all())
        .map_err(|e| Failure::io("syncing", &new, &e))?;
    match std::fs::hard_link(&new, file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Failure::io("linking into place", &new, &e)),
    }
    match std::fs::remove_file(&new) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::io("removing", &new, &e)),
    }
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty());
    let folder = folder.unwrap_or(Path::new("."));
    std::fs::File::open(folder)
        .and_then(|f| f.sync_all())
        .map_err(|e| Failure::io("syncing the folder", folder, &e))
}

/// The table of `tree`: its keys and values are raw bytes, named as the tree.
fn table(tree: Tree) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(tree.name())
}

/// redb 4: see the module documentation. A new file is made whole (see
/// [`RedbEngine::open`]). Opening checks the integrity of the whole file
/// (every page's checksum), so a file altered or cut behind redb's back is
/// refused with a [`StoreError::Engine`] naming it instead of being trusted
/// (redb's plain open may panic on such a file). A table is created by its
/// first write; reading a tree that was never written gives nothing.
pub struct RedbEngine {
    db: Database,
    path: String,
}

impl std::fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbEngine {
    /// Opens the database file `file`, creating it (not its folder) if it
    /// does not exist. A new file is initialised under a temporary name
    /// (the file's name and `.new`) and linked into place whole, so `file`
    /// never exists half made (a crash during the very first open leaves at
    /// most the temporary file, which the next open replaces) and an
    /// existing `file` is never replaced. While another opener holds the
    /// file's lock it tries again for up to a second (a process being
    /// killed lets go of it a moment after its last write), then gives up.
    ///
    /// # Errors
    /// [`StoreError::Engine`] naming the file and what is wrong: another
    /// opener holds it, it is not a redb database (an empty file is not
    /// one), it is corrupt or cut short (its integrity check failed), or
    /// the I/O failed.
    pub fn open(file: &Path) -> Result<RedbEngine, StoreError> {
        let path = file.display().to_string();
        let engine_err = |reason: String| StoreError::Engine {
            path: path.clone(),
            reason,
        };
        let started = Instant::now();
        loop {
            let attempt = if file.exists() { Ok(()) } else { create(file) }
                .and_then(|()| open_existing(file));
            match attempt {
                Ok(db) => {
                    return Ok(RedbEngine {
                        db,
                        path: path.clone(),
                    });
                }
                Err(Failure::Locked) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(Failure::Locked) => {
                    return Err(engine_err(format!(
                        "the database is open in another process or store (its lock was still \
                         held after {LOCK_WAIT:?})"
                    )));
                }
                Err(Failure::Other(reason)) => return Err(engine_err(reason)),
            }
        }
    }

    fn err(&self, doing: &str, tree: Tree, e: impl std::fmt::Display) -> StoreError {
        StoreError::Engine {
            path: self.path.clone(),
            reason: format!("{doing} tree {}: {e}", tree.name()),
        }
    }

    /// Runs `f` on `tree`'s table in one write transaction and commits it
    /// durably; nothing of it lands if `f` or the commit fails.
    fn write(
        &self,
        tree: Tree,
        f: impl FnOnce(
            &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| self.err("writing", tree, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err("writing", tree, e))?;
        {
            let mut t = txn
                .open_table(table(tree))
                .map_err(|e| self.err("writing", tree, e))?;
            f(&mut t).map_err(|e| self.err("writing", tree, e))?;
        }
        // Dropping an uncommitted transaction (on an error above) aborts it.
        txn.commit().map_err(|e| self.err("committing", tree, e))
    }

    /// Sets `key` in [`Tree::State`] to `[1]` and drops the table of
    /// [`Tree::Audit`], in one durable commit: the store's audit log now
    /// lives in its audit file (a moved log's records leave redb with it).
    ///
    /// # Errors
    /// [`StoreError::Engine`]; the commit may or may not have happened.
    pub(super) fn mark_audit_moved(&self, key: &[u8]) -> Result<(), StoreError> {
        let tree = Tree::State;
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| self.err("writing", tree, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err("writing", tree, e))?;
        {
            let mut t = txn
                .open_table(table(tree))
                .map_err(|e| self.err("writing", tree, e))?;
            t.insert(key, [1u8].as_slice())
                .map_err(|e| self.err("writing", tree, e))?;
        }
        txn.delete_table(table(Tree::Audit))
            .map_err(|e| self.err("dropping", Tree::Audit, e))?;
        txn.commit().map_err(|e| self.err("committing", tree, e))
    }

    /// Runs `f` on `tree`'s table in a read transaction (a consistent
    /// snapshot); `Ok(None)` if the table was never written.
    fn read<R>(
        &self,
        tree: Tree,
        f: impl FnOnce(
            &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
        ) -> Result<R, redb::StorageError>,
    ) -> Result<Option<R>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.err("reading", tree, e))?;
        let t = match txn.open_table(table(tree)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err("reading", tree, e)),
        };
        f(&t).map(Some).map_err(|e| self.err("reading", tree, e))
    }

    /// Up to `limit` entries of `tree` from `from` on (all of them if `from`
    /// is `None`), in key order.
    fn collect(
        &self,
        tree: Tree,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Records, StoreError> {
        let rows = self.read(tree, |t| {
            let iter = match from {
                Some(from) => t.range::<&[u8]>(from..)?,
                None => t.iter()?,
            };
            let mut rows = Vec::new();
            for row in iter.take(limit) {
                let (k, v) = row?;
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(rows)
        })?;
        Ok(rows.unwrap_or_default())
    }
}

impl Engine for RedbEngine {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.read(tree, |t| Ok(t.get(key)?.map(|v| v.value().to_vec())))?;
        Ok(value.flatten())
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(tree, |t| t.insert(key, value).map(drop))
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.write(tree, |t| t.remove(key).map(drop))
    }

    fn put_batch(&self, tree: Tree, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(tree, |t| {
            for (k, v) in entries {
                t.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        })
    }

    fn scan(&self, tree: Tree) -> Result<Records, StoreError> {
        self.collect(tree, None, usize::MAX)
    }

    fn range(&self, tree: Tree, from: &[u8], limit: usize) -> Result<Records, StoreError> {
        self.collect(tree, Some(from), limit)
    }

    fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError> {
        let last = self.read(tree, |t| {
            Ok(t.last()?
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
        })?;
        Ok(last.flatten())
    }

    fn path(&self) -> &str {
        &self.path
    }
}

#[cfg(test)]
#[path = "redb_engine_tests.rs"]
mod tests;
