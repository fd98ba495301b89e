//! The node's durable store: the kill switch, approvals, the broker's
//! outcomes and the audit log ([`AuditLog`]), behind one storage trait
//! ([`Engine`]) so the engine can change without touching its users.
//!
//! [`SplitEngine`] is the engine, over two files in the store's folder:
//!
//! * the audit log's records ([`Tree::Audit`]) in [`AUDIT_FILE`], an
//!   append-only file of checksummed frames: a batch of records is one
//!   write and one `fdatasync` before it returns;
//! * every other tree in [`STORE_FILE`], a redb 4 database ([`RedbEngine`]):
//!   every write is one redb write transaction committed with
//!   `Durability::Immediate`, which fsyncs the file (`fdatasync`) before it
//!   returns.
//!
//! So a state change the node acknowledged survives a crash of the process,
//! and of the machine on a disk that honours cache flushes.
//! actors/tests/audit_crash.rs holds the audit file to that by killing a
//! writer process with SIGKILL at random moments. (The engine was sled
//! 0.34, whose flush makes its log durable with `sync_file_range(2)` only,
//! then redb alone; docs/DESIGN.md, "One store".)

mod audit_file;
mod audit_log;
mod audit_read;
mod checkpoints;
mod redb_engine;
mod split_engine;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use mxp_governance::approval::Approval;
use mxp_governance::audit::AppendError;

#[cfg(test)]
pub(crate) use audit_file::tamper;
pub use audit_file::{AUDIT_FILE, FrameFault, MAX_RECORD_BYTES, WriteRefused};
pub use audit_log::{AuditLog, AuditViolation, seq_key, seq_of_key};
pub use checkpoints::StoredCheckpoint;
pub use redb_engine::RedbEngine;
pub use split_engine::SplitEngine;

/// The database file of a store (every tree but the audit log's), in the
/// folder [`Store::open`] is given.
pub const STORE_FILE: &str = "store.redb";

/// The files a sled 0.34 store keeps at the top of its folder (beside a
/// `blobs` folder and `snap.*` files), by which an old store is recognised.
const SLED_FILES: [&str; 2] = ["conf", "db"];

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine failed (I/O, corruption it detected, the file held by
    /// another opener).
    #[error("store {path}: {reason}")]
    Engine {
        /// The store's database file (or folder).
        path: String,
        /// What the engine said.
        reason: String,
    },
    /// The store's folder holds a sled store (what the node kept before
    /// redb) and no redb store: refused, nothing read, changed or deleted.
    #[error(
        "store {path}: the folder holds a store of the old engine (sled 0.34: its files \
         {files}) and no {STORE_FILE}; this node keeps its store in redb and does not read \
         sled. Nothing was changed. Move the folder aside (the node then starts a new, empty \
         store: no approvals, the kill switch off, a new audit log from record 0); if the old \
         audit log is needed, export it first with the previous release (mxp audit export)"
    )]
    SledStore {
        /// The store's folder.
        path: String,
        /// The sled files found, e.g. `conf, db`.
        files: String,
    },
    /// A record did not decode.
    #[error("store {path}: record {key} in {tree} is corrupt: {reason}")]
    Corrupt {
        /// The store's folder.
        path: String,
        /// The tree.
        tree: &'static str,
        /// The record's key, hex.
        key: String,
        /// Why.
        reason: String,
    },
    /// An [`AuditLog`] over this store is already open: the log has one
    /// writer, or two would hand out the same sequence numbers.
    #[error("store {path}: the audit log is already open")]
    AuditBusy {
        /// The store's folder.
        path: String,
    },
    /// An audit record is not what the chain requires.
    #[error("store {path}: audit record {seq}: {violation}")]
    AuditCorrupt {
        /// The store's folder.
        path: String,
        /// The sequence number of the first bad (or missing) record.
        seq: u64,
        /// What is wrong with it.
        violation: AuditViolation,
    },
    /// An event was refused before anything was written (over the record
    /// limits, or the sequence numbers are exhausted); the batch was not
    /// written.
    #[error("store {path}: audit event refused: {source}")]
    AuditRefused {
        /// The store's folder.
        path: String,
        /// Why.
        source: AppendError,
    },
    /// An earlier audit write failed and may or may not have landed, so the
    /// next sequence number is unknown: reopen the [`AuditLog`].
    #[error("store {path}: an earlier audit write failed; reopen the audit log")]
    AuditPoisoned {
        /// The store's folder.
        path: String,
    },
    /// A write to the audit tree that its file does not take: not the next
    /// record, a delete, a record too long. Nothing was written.
    #[error("store {path}: audit write refused: {refused}")]
    AuditWriteRefused {
        /// The audit file.
        path: String,
        /// Why.
        refused: WriteRefused,
    },
    /// store.redb records that the store made its audit file, and the file
    /// is not there: refused rather than start the log again from record 0.
    #[error(
        "store {path}: the audit log's file is missing, though this store made it (store.redb \
         says so): it was deleted or moved. Nothing was changed. Put it back (restore it from \
         a backup), or move the store's folder aside to start a new, empty store"
    )]
    AuditFileMissing {
        /// The audit file.
        path: String,
    },
    /// store.redb holds audit records the audit file does not: written
    /// there by a release that kept the audit log in redb, after this one
    /// moved it into the file. Nothing was changed.
    #[error(
        "store {path}: store.redb holds {records} audit records beside the audit file \
         {AUDIT_FILE}, which does not hold them (a release that kept the log in store.redb ran \
         on this store after this one moved the log into the file). Nothing was changed. Export \
         that log with that release (mxp audit export) if it is needed, then move the store's \
         folder aside"
    )]
    AuditInBoth {
        /// The redb database.
        path: String,
        /// How many records it holds (the last one's sequence number + 1).
        records: u64,
    },
}

/// The named key spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Node state: the kill switch, and that the store made its audit file.
    State,
    /// Approvals by id.
    Approvals,
    /// Audit records by big-endian sequence number ([`seq_key`]); in
    /// [`SplitEngine`], the append-only [`AUDIT_FILE`].
    Audit,
    /// The broker's effect outcomes by idempotency key (their encoding is
    /// the broker's).
    Outcomes,
    /// The audit log's signed checkpoints and Merkle chunk hashes.
    Checkpoints,
}

impl Tree {
    /// Its name in the engine.
    pub const fn name(self) -> &'static str {
        match self {
            Tree::State => "state",
            Tree::Approvals => "approvals",
            Tree::Audit => "audit",
            Tree::Outcomes => "outcomes",
            Tree::Checkpoints => "checkpoints",
        }
    }
}

/// One `(key, value)` of a tree.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Every `(key, value)` of a tree, in key order.
pub type Records = Vec<Entry>;

/// A key-value engine: durable writes, ordered scans.
pub trait Engine: Send + Sync + 'static {
    /// The value of `key` in `tree`.
    ///
    /// # Errors
    /// [`StoreError::Engine`].
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` and makes it durable before returning.
    ///
    /// # Errors
    /// [`StoreError::Engine`]; the write may or may not have happened.
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`, durably.
    ///
    /// # Errors
    /// [`StoreError::Engine`].
    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError>;
    /// Sets every `(key, value)` of `entries` atomically (after a crash
    /// either all of them are there or none is) and makes them durable
    /// before returning: one durable write for the lot (group commit).
    ///
    /// # Errors
    /// [`StoreError::Engine`]; the batch may or may not have happened (but
    /// not in part).
    fn put_batch(&self, tree: Tree, entries: &[Entry]) -> Result<(), StoreError>;
    /// Every `(key, value)` of `tree`, in key order.
    ///
    /// # Errors
    /// [`StoreError::Engine`].
    fn scan(&self, tree: Tree) -> Result<Records, StoreError>;
    /// Up to `limit` `(key, value)` of `tree` from `from` on (inclusive),
    /// in key order. Fewer only at the tree's end or, for an engine that
    /// checks records as it reads them (the audit file of
    /// [`SplitEngine`]), before a damaged one, which the next call, starting
    /// at it, reports.
    ///
    /// # Errors
    /// [`StoreError::Engine`].
    fn range(&self, tree: Tree, from: &[u8], limit: usize) -> Result<Records, StoreError>;
    /// The `(key, value)` with the highest key in `tree`, if any.
    ///
    /// # Errors
    /// [`StoreError::Engine`].
    fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError>;
    /// Where it lives, for messages.
    fn path(&self) -> &str;
}

const KILL_SWITCH: &[u8] = b"kill_switch";

/// The node's store: typed records over an [`Engine`].
pub struct Store {
    engine: Box<dyn Engine>,
    /// Whether an [`AuditLog`] holds the audit tree (one writer at a time).
    audit_open: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.engine.path())
            .finish()
    }
}

impl Store {
    /// The store over `engine`.
    pub fn new(engine: Box<dyn Engine>) -> Store {
        Store {
            engine,
            audit_open: AtomicBool::new(false),
        }
    }

    /// Opens the store in the folder `dir` ([`SplitEngine::open`]): the
    /// redb database [`STORE_FILE`] and the audit file [`AUDIT_FILE`] in
    /// it, creating the folder and the files if they do not exist (and
    /// moving the audit records of a store that kept them in redb into the
    /// audit file), and cutting a torn write off the end of the audit file.
    ///
    /// # Errors
    /// [`StoreError::SledStore`] if `dir` holds a sled store and no
    /// [`STORE_FILE`] (nothing is created then); [`StoreError::Engine`]
    /// naming the folder or the file and the reason (the folder cannot be
    /// created, another opener holds the database, a file is not what it
    /// should be or is corrupt or cut short, permissions);
    /// [`StoreError::AuditCorrupt`] naming a damaged frame inside the audit
    /// file; [`StoreError::AuditFileMissing`]; [`StoreError::AuditInBoth`].
    pub fn open(dir: &Path) -> Result<Arc<Store>, StoreError> {
        let file = dir.join(STORE_FILE);
        if !file.exists() {
            let found: Vec<&str> = SLED_FILES
                .into_iter()
                .filter(|name| dir.join(name).is_file())
                .collect();
            if found.len() == SLED_FILES.len() {
                return Err(StoreError::SledStore {
                    path: dir.display().to_string(),
                    files: found.join(", "),
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Engine {
            path: dir.display().to_string(),
            reason: format!("creating the store's folder: {e}"),
        })?;
        Ok(Arc::new(Store::new(Box::new(SplitEngine::open(dir)?))))
    }

    /// Whether the kill switch is on (off when never set).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn kill_switch(&self) -> Result<bool, StoreError> {
        match self.engine.get(Tree::State, KILL_SWITCH)? {
            None => Ok(false),
            Some(v) => match v.as_slice() {
                [0] => Ok(false),
                [1] => Ok(true),
                _ => Err(self.corrupt(Tree::State, KILL_SWITCH, "the kill switch is not 0 or 1")),
            },
        }
    }

    /// Persists the kill switch.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn set_kill_switch(&self, on: bool) -> Result<(), StoreError> {
        self.engine.put(Tree::State, KILL_SWITCH, &[u8::from(on)])
    }

    /// Every stored approval.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming the first record that does not decode.
    pub fn approvals(&self) -> Result<Vec<Approval>, StoreError> {
        self.engine
            .scan(Tree::Approvals)?
            .into_iter()
            .map(|(k, v)| {
                Approval::decode(&v).map_err(|e| self.corrupt(Tree::Approvals, &k, &e.to_string()))
            })
            .collect()
    }

    /// Writes `approval` (by its id).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn put_approval(&self, approval: &Approval) -> Result<(), StoreError> {
        self.engine
            .put(Tree::Approvals, &approval.id().0, &approval.encode())
    }

    /// Removes an approval record (pruned).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn delete_approval(
        &self,
        id: &mxp_governance::approval::ApprovalId,
    ) -> Result<(), StoreError> {
        self.engine.delete(Tree::Approvals, &id.0)
    }

    /// Every broker outcome record, in key order.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn outcomes(&self) -> Result<Records, StoreError> {
        self.engine.scan(Tree::Outcomes)
    }

    /// One broker outcome record.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn outcome(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.get(Tree::Outcomes, key)
    }

    /// Writes a broker outcome record, durably.
    ///
    /// # Errors
    /// [`StoreError`]; the write may or may not have happened.
    pub fn put_outcome(&self, key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        self.engine.put(Tree::Outcomes, key, record)
    }

    /// Removes a broker outcome record (pruned), durably.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn delete_outcome(&self, key: &[u8]) -> Result<(), StoreError> {
        self.engine.delete(Tree::Outcomes, key)
    }

    /// The path the engine reports (for error messages).
    pub fn path(&self) -> &str {
        self.engine.path()
    }

    fn corrupt(&self, tree: Tree, key: &[u8], reason: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.engine.path().to_owned(),
            tree: tree.name(),
            key: key.iter().map(|b| format!("{b:02x}")).collect(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use mxp_governance::approval::{ApprovalBook, ApprovalId, IntentKey};
    use mxp_governance::policy::ApprovalRequirement;
    use mxp_governance::token::args::args_digest;
    use mxp_protocol::{AgentId, Fingerprint, PrincipalId, PrincipalKind};

    #[test]
    fn state_survives_reopening_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut book = ApprovalBook::new(8);
        let key = IntentKey::new(
            PrincipalId::Peer(Fingerprint([1; 32])),
            AgentId::from_bytes([2; 16]),
            "s-1".parse().unwrap(),
            "send",
            args_digest(&serde_json::json!({"to": "x"})),
        );
        let a = book
            .request(
                ApprovalId([3; 16]),
                key,
                vec!["p".into()],
                vec![ApprovalRequirement::new(PrincipalKind::Operator, 1)],
                1_000,
                60_000,
            )
            .unwrap()
            .clone();
        {
            let store = Store::open(&path).unwrap();
            assert!(!store.kill_switch().unwrap());
            store.set_kill_switch(true).unwrap();
            store.put_approval(&a).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.kill_switch().unwrap());
        assert_eq!(store.approvals().unwrap(), vec![a.clone()]);
        // A record that does not decode is named, not skipped.
        store
            .engine
            .put(Tree::Approvals, &[9; 16], b"not an approval")
            .unwrap();
        let e = store.approvals().unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Corrupt {
                    tree: "approvals",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("0909"), "{e}");
        store.delete_approval(&ApprovalId([9; 16])).unwrap();
        assert_eq!(store.approvals().unwrap().len(), 1);
    }

    #[test]
    fn a_store_held_by_another_opener_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let _held = Store::open(&path).unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    /// Every file under `dir` (relative name, bytes), in order.
    fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.extend(
                    listing(&entry.path())
                        .into_iter()
                        .map(|(n, b)| (format!("{name}/{n}"), b)),
                );
                out.push((format!("{name}/"), Vec::new()));
            } else {
                out.push((name, std::fs::read(entry.path()).unwrap()));
            }
        }
        out.sort();
        out
    }

    /// Writes the sled 0.34 store of tests/fixtures into `dir`.
    fn sled_store(dir: &Path) {
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        let fixture = |name| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/sled-0.34-store")
                .join(name);
            std::fs::read(p).unwrap()
        };
        std::fs::write(dir.join("conf"), fixture("conf")).unwrap();
        std::fs::write(dir.join("db"), fixture("db")).unwrap();
    }

    #[test]
    fn a_folder_with_an_old_sled_store_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        sled_store(&path);
        let before = listing(&path);
        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, StoreError::SledStore { .. }), "{e}");
        let text = e.to_string();
        for says in [
            path.display().to_string().as_str(),
            "sled 0.34",
            "conf, db",
            "no store.redb",
            "Nothing was changed",
            "Move the folder aside",
            "mxp audit export",
        ] {
            assert!(text.contains(says), "{says:?} not in: {text}");
        }
        assert_eq!(
            listing(&path),
            before,
            "nothing created, changed or deleted"
        );
        assert!(!path.join(STORE_FILE).exists());

        // Moved aside, the node starts a new, empty store in its place.
        std::fs::rename(&path, dir.path().join("store.sled")).unwrap();
        let store = Store::open(&path).unwrap();
        assert!(!store.kill_switch().unwrap());
        store.set_kill_switch(true).unwrap();
        drop(store);
        assert_eq!(listing(&dir.path().join("store.sled")), before);

        // A folder whose redb store is there is opened, whatever else it holds.
        sled_store(&path);
        assert!(Store::open(&path).unwrap().kill_switch().unwrap());

        // One of sled's names alone is not a sled store.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("db"), b"mine").unwrap();
        assert!(!Store::open(&other).unwrap().kill_switch().unwrap());
    }
}
