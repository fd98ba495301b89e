//! The node's engine: [`Tree::Audit`] in its append-only file
//! ([`AUDIT_FILE`]), every other tree in the redb database ([`STORE_FILE`]),
//! both in the store's folder.
//!
//! The audit log is append-only by nature (consecutive sequence numbers,
//! written in order, never updated), and a batch of it is then one write
//! and one `fdatasync` of the frames, where a redb commit writes several
//! pages of its B-tree (docs/DESIGN.md, "One store"). Approvals, the kill
//! switch, outcomes and checkpoints are updated and deleted, and stay in
//! redb.
//!
//! [`AUDIT_FILE`]: super::AUDIT_FILE

use std::path::Path;

use super::audit_file::AuditFile;
use super::{Engine, Entry, Records, RedbEngine, STORE_FILE, StoreError, Tree};

/// See the module documentation.
#[derive(Debug)]
pub struct SplitEngine {
    redb: RedbEngine,
    audit: AuditFile,
    dir: String,
}

impl SplitEngine {
    /// Opens the store in the folder `dir` (which must exist): the redb
    /// database first (whose lock keeps other openers out of the folder,
    /// [`RedbEngine::open`]), then the audit file (made if the store has
    /// none yet, with the audit records of a store whose log was in redb,
    /// checked, a torn write at its end cut off).
    ///
    /// # Errors
    /// As [`RedbEngine::open`]; [`StoreError::AuditFileMissing`],
    /// [`StoreError::AuditInBoth`], [`StoreError::AuditCorrupt`] naming a
    /// damaged frame inside the audit file, [`StoreError::Engine`] naming
    /// the audit file.
    pub fn open(dir: &Path) -> Result<SplitEngine, StoreError> {
        let redb = RedbEngine::open(&dir.join(STORE_FILE))?;
        let audit = AuditFile::open(dir, &redb)?;
        Ok(SplitEngine {
            redb,
            audit,
            dir: dir.display().to_string(),
        })
    }
}

impl Engine for SplitEngine {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match tree {
            Tree::Audit => self.audit.get(key),
            _ => self.redb.get(tree, key),
        }
    }

    /// On [`Tree::Audit`], only the next record (as a batch of one).
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        match tree {
            Tree::Audit => self.audit.append(&[(key.to_vec(), value.to_vec())]),
            _ => self.redb.put(tree, key, value),
        }
    }

    /// Refused on [`Tree::Audit`] ([`super::WriteRefused::Delete`]).
    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        match tree {
            Tree::Audit => Err(self.audit.delete(key)),
            _ => self.redb.delete(tree, key),
        }
    }

    /// On [`Tree::Audit`], only the next records, in order.
    fn put_batch(&self, tree: Tree, entries: &[Entry]) -> Result<(), StoreError> {
        match tree {
            Tree::Audit => self.audit.append(entries),
            _ => self.redb.put_batch(tree, entries),
        }
    }

    fn scan(&self, tree: Tree) -> Result<Records, StoreError> {
        if tree != Tree::Audit {
            return self.redb.scan(tree);
        }
        // Read on past a short read, so that a damaged frame is an error.
        let mut all = Vec::new();
        loop {
            let rows = self.audit.read(all.len() as u64, usize::MAX)?;
            if rows.is_empty() {
                return Ok(all);
            }
            all.extend(rows);
        }
    }

    /// On [`Tree::Audit`], fewer than `limit` records may come back before
    /// a damaged frame, which the next call (starting at it) names.
    fn range(&self, tree: Tree, from: &[u8], limit: usize) -> Result<Records, StoreError> {
        match tree {
            Tree::Audit => self.audit.range(from, limit),
            _ => self.redb.range(tree, from, limit),
        }
    }

    fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError> {
        match tree {
            Tree::Audit => self.audit.last(),
            _ => self.redb.last(tree),
        }
    }

    /// The store's folder.
    fn path(&self) -> &str {
        &self.dir
    }
}
