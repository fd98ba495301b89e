//! The sled engine.

use std::path::Path;

use super::{Engine, Records, StoreError, Tree};

/// sled 0.34: one database folder, one sled tree per [`Tree`]; every write
/// is followed by `flush` (fsync) before it returns.
pub struct SledEngine {
    db: sled::Db,
    state: sled::Tree,
    approvals: sled::Tree,
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
        let db = sled::Config::new().path(dir).open().map_err(err)?;
        let state = db.open_tree(Tree::State.name()).map_err(err)?;
        let approvals = db.open_tree(Tree::Approvals.name()).map_err(err)?;
        Ok(SledEngine {
            db,
            state,
            approvals,
            path,
        })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        match tree {
            Tree::State => &self.state,
            Tree::Approvals => &self.approvals,
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

    fn scan(&self, tree: Tree) -> Result<Records, StoreError> {
        self.tree(tree)
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }

    fn path(&self) -> &str {
        &self.path
    }
}
