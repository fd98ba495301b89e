//! The sled engine.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Engine, Entry, Records, StoreError, Tree};

/// How long [`SledEngine::open`] waits for sled's file lock.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Opens sled in `dir`, retrying for up to [`LOCK_WAIT`] while its file lock
/// is held. sled releases the lock only once its background threads are
/// done with the files, a moment after the last handle of a database is
/// dropped, so a store closed and reopened at once (a restart in the same
/// process, or a process started right after one closed the store) would
/// otherwise be refused. A store another opener keeps is still refused.
fn open_waiting_for_lock(dir: &Path) -> Result<sled::Db, sled::Error> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            // sled names the lock only in its message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// sled 0.34: one database folder, one sled tree per [`Tree`]; every write
/// is followed by `flush` (fsync) before it returns. A batch is one
/// `sled::Batch` (atomic, also across a crash) and one flush.
pub struct SledEngine {
    db: sled::Db,
    state: sled::Tree,
    approvals: sled::Tree,
    audit: sled::Tree,
    outcomes: sled::Tree,
    checkpoints: sled::Tree,
    path: String,
}

impl SledEngine {
    /// Opens (creating) the database in `dir`.
    ///
    /// # Errors
    /// [`StoreError::Engine`] with sled's reason.
    pub fn open(dir: &Path) -> Result<SledEngine, StoreError> {
        let path = dir.display().to_string();
        let err = |e: sled::Error| StoreError::Engine {
            path: path.clone(),
            reason: e.to_string(),
        };
        let db = open_waiting_for_lock(dir).map_err(err)?;
        let state = db.open_tree(Tree::State.name()).map_err(err)?;
        let approvals = db.open_tree(Tree::Approvals.name()).map_err(err)?;
        let audit = db.open_tree(Tree::Audit.name()).map_err(err)?;
        let outcomes = db.open_tree(Tree::Outcomes.name()).map_err(err)?;
        let checkpoints = db.open_tree(Tree::Checkpoints.name()).map_err(err)?;
        Ok(SledEngine {
            db,
            state,
            approvals,
            audit,
            outcomes,
            checkpoints,
            path,
        })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        match tree {
            Tree::State => &self.state,
            Tree::Approvals => &self.approvals,
            Tree::Audit => &self.audit,
            Tree::Outcomes => &self.outcomes,
            Tree::Checkpoints => &self.checkpoints,
        }
    }

    fn err(&self, e: sled::Error) -> StoreError {
        StoreError::Engine {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    fn collect(&self, iter: sled::Iter, limit: usize) -> Result<Records, StoreError> {
        iter.take(limit)
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }
}

impl Engine for SledEngine {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree(tree)
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.err(e))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(tree)
            .insert(key, value)
            .map_err(|e| self.err(e))?;
        self.flush()
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.tree(tree).remove(key).map_err(|e| self.err(e))?;
        self.flush()
    }

    fn put_batch(&self, tree: Tree, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.tree(tree)
            .apply_batch(batch)
            .map_err(|e| self.err(e))?;
        self.flush()
    }

    fn scan(&self, tree: Tree) -> Result<Records, StoreError> {
        self.collect(self.tree(tree).iter(), usize::MAX)
    }

    fn range(&self, tree: Tree, from: &[u8], limit: usize) -> Result<Records, StoreError> {
        self.collect(self.tree(tree).range(from..), limit)
    }

    fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError> {
        self.tree(tree)
            .last()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .map_err(|e| self.err(e))
    }

    fn path(&self) -> &str {
        &self.path
    }
}
