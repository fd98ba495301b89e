//! An RFC 6962 Merkle tree that keeps in memory only what a log of any size
//! needs often: one hash per complete chunk of [`CHUNK_LEAVES`] leaves (and
//! the complete aligned subtrees above them) and the leaves of the last,
//! incomplete chunk. Leaves inside a complete chunk are read back, when a
//! proof needs them, through [`ChunkLeaves`] (from the store, in a node).
//!
//! Memory: about `2n / 256` hashes for `n` leaves (64 KiB per million
//! leaves) plus at most 255 tail leaves, instead of [`super::MerkleLog`]'s
//! `2n`. The root at the current size needs no chunk read; a root at an
//! earlier size reads at most one chunk, an inclusion or consistency proof
//! at most three (one, for an inclusion proof at the current size).
//!
//! Pure: the source of chunk leaves is an input.

use std::cell::RefCell;

use super::Hash;
use super::merkle::{
    EMPTY_ROOT, MerkleError, MerkleLog, Slice, Subtrees, TreeHead, make_consistency,
    make_inclusion, node_hash, root, split_point,
};

/// Leaves per chunk (a complete subtree of height 8).
pub const CHUNK_LEAVES: u64 = 256;

/// Where the leaves of a complete chunk come from.
pub trait ChunkLeaves {
    /// The [`CHUNK_LEAVES`] leaf hashes of chunk `index` (leaves
    /// `index × 256 .. (index + 1) × 256`), or `None` if they cannot be read.
    fn chunk_leaves(&mut self, index: u64) -> Option<Vec<Hash>>;
}

/// No chunk can be read: for a log whose proofs and roots need only what it
/// holds in memory (the root at its current size).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoChunks;

impl ChunkLeaves for NoChunks {
    fn chunk_leaves(&mut self, _: u64) -> Option<Vec<Hash>> {
        None
    }
}

/// An append-only Merkle tree holding chunk hashes and the tail in memory;
/// see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct ChunkedLog {
    /// A Merkle tree whose leaves are the chunk hashes: its level `h` is
    /// level `8 + h` of the whole tree.
    chunks: MerkleLog,
    /// The leaves after the last complete chunk (fewer than 256).
    tail: Vec<Hash>,
}

impl ChunkedLog {
    /// An empty tree.
    pub fn new() -> ChunkedLog {
        ChunkedLog::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.chunks.size() * CHUNK_LEAVES + self.tail.len() as u64
    }

    /// Number of complete chunks.
    pub fn complete_chunks(&self) -> u64 {
        self.chunks.size()
    }

    /// The hash of complete chunk `index` (the root of its 256 leaves).
    pub fn chunk_hash(&self, index: u64) -> Option<Hash> {
        self.chunks.leaf(index)
    }

    /// Adds a complete chunk by its hash (restoring a tree from stored chunk
    /// hashes). Only between chunks: refused while the tail holds leaves.
    ///
    /// # Errors
    /// [`MerkleError::SizeOutOfRange`] if the tail is not empty.
    pub fn push_chunk(&mut self, hash: Hash) -> Result<(), MerkleError> {
        if !self.tail.is_empty() {
            return Err(MerkleError::SizeOutOfRange {
                size: self.size(),
                have: self.chunks.size() * CHUNK_LEAVES,
            });
        }
        self.chunks.append(hash);
        Ok(())
    }

    /// Appends a leaf hash; returns the hash of the chunk it completes, if it
    /// completes one.
    pub fn append(&mut self, leaf: Hash) -> Option<Hash> {
        self.tail.push(leaf);
        if self.tail.len() as u64 == CHUNK_LEAVES {
            let hash = root(&self.tail);
            self.tail.clear();
            self.chunks.append(hash);
            return Some(hash);
        }
        None
    }

    /// The root of the whole tree (no chunk is read).
    pub fn root(&self) -> Hash {
        self.with(&mut NoChunks)
            .subtree(0, self.size())
            .unwrap_or(EMPTY_ROOT)
    }

    /// The tree head at the current size.
    pub fn head(&self) -> TreeHead {
        TreeHead {
            size: self.size(),
            root: self.root(),
        }
    }

    /// The root of the first `size` leaves (reads at most one chunk).
    ///
    /// # Errors
    /// [`MerkleError::SizeOutOfRange`], [`MerkleError::ChunkUnavailable`] or
    /// [`MerkleError::ChunkMismatch`].
    pub fn root_at(&self, size: u64, src: &mut impl ChunkLeaves) -> Result<Hash, MerkleError> {
        let t = self.with(src);
        let r = t.subtree(0, size);
        t.result(r.ok_or(MerkleError::SizeOutOfRange {
            size,
            have: self.size(),
        }))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size`
    /// leaves.
    ///
    /// # Errors
    /// As [`super::MerkleLog::inclusion_proof`], or a chunk that cannot be
    /// read or does not match.
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
        src: &mut impl ChunkLeaves,
    ) -> Result<Vec<Hash>, MerkleError> {
        let t = self.with(src);
        let r = make_inclusion(&t, index, size);
        t.result(r)
    }

    /// The consistency proof from the first `old` leaves to the first `new`.
    ///
    /// # Errors
    /// As [`super::MerkleLog::consistency_proof`], or a chunk that cannot be
    /// read or does not match.
    pub fn consistency_proof(
        &self,
        old: u64,
        new: u64,
        src: &mut impl ChunkLeaves,
    ) -> Result<Vec<Hash>, MerkleError> {
        let t = self.with(src);
        let r = make_consistency(&t, old, new);
        t.result(r)
    }

    fn with<'a, S: ChunkLeaves>(&'a self, src: &'a mut S) -> WithSource<'a, S> {
        WithSource {
            log: self,
            src: RefCell::new(src),
            cache: RefCell::new(Vec::new()),
            failed: RefCell::new(None),
        }
    }
}

/// A [`ChunkedLog`] and the source of its chunks' leaves, as a [`Subtrees`].
struct WithSource<'a, S> {
    log: &'a ChunkedLog,
    src: RefCell<&'a mut S>,
    /// The chunks read (at most three are needed by any proof).
    cache: RefCell<Vec<(u64, Vec<Hash>)>>,
    /// The first chunk that could not be read or did not match.
    failed: RefCell<Option<MerkleError>>,
}

impl<S: ChunkLeaves> WithSource<'_, S> {
    /// A chunk read failure, if one happened, wins over what it caused.
    fn result<T>(&self, r: Result<T, MerkleError>) -> Result<T, MerkleError> {
        match self.failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => r,
        }
    }

    fn fail(&self, e: MerkleError) -> Option<Hash> {
        self.failed.borrow_mut().get_or_insert(e);
        None
    }

    /// `MTH` of leaves `from..to` of complete chunk `chunk` (offsets in it).
    fn in_chunk(&self, chunk: u64, from: u64, to: u64) -> Option<Hash> {
        let cached = self
            .cache
            .borrow()
            .iter()
            .find(|(c, _)| *c == chunk)
            .map(|(_, l)| Slice(l).subtree(from, to));
        if let Some(hash) = cached {
            return hash;
        }
        let Some(leaves) = self.src.borrow_mut().chunk_leaves(chunk) else {
            return self.fail(MerkleError::ChunkUnavailable { chunk });
        };
        if leaves.len() as u64 != CHUNK_LEAVES || Some(root(&leaves)) != self.log.chunks.leaf(chunk)
        {
            return self.fail(MerkleError::ChunkMismatch { chunk });
        }
        let hash = Slice(&leaves).subtree(from, to);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= 3 {
            cache.remove(0);
        }
        cache.push((chunk, leaves));
        hash
    }
}

impl<S: ChunkLeaves> Subtrees for WithSource<'_, S> {
    fn size(&self) -> u64 {
        self.log.size()
    }

    fn subtree(&self, start: u64, end: u64) -> Option<Hash> {
        if end > self.log.size() || start > end {
            return None;
        }
        let n = end - start;
        if n == 0 {
            return Some(EMPTY_ROOT);
        }
        if start.is_multiple_of(CHUNK_LEAVES) && end.is_multiple_of(CHUNK_LEAVES) {
            // MTH over whole chunks is MTH over their hashes: every split
            // point of a multiple of 256 leaves is a multiple of 256.
            return self
                .log
                .chunks
                .subtree(start / CHUNK_LEAVES, end / CHUNK_LEAVES);
        }
        let chunk = start / CHUNK_LEAVES;
        if (end - 1) / CHUNK_LEAVES == chunk {
            let base = chunk * CHUNK_LEAVES;
            if chunk == self.log.chunks.size() {
                return Slice(&self.log.tail).subtree(start - base, end - base);
            }
            return self.in_chunk(chunk, start - base, end - base);
        }
        let k = split_point(n);
        Some(node_hash(
            &self.subtree(start, start + k)?,
            &self.subtree(start + k, end)?,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::super::merkle::{self, leaf_hash};
    use super::*;

    /// Chunks read from a full list of leaves, counting reads.
    struct FromLeaves<'a> {
        leaves: &'a [Hash],
        reads: usize,
        broken: Option<u64>,
    }

    impl ChunkLeaves for FromLeaves<'_> {
        fn chunk_leaves(&mut self, index: u64) -> Option<Vec<Hash>> {
            self.reads += 1;
            let from = usize::try_from(index * CHUNK_LEAVES).ok()?;
            let mut l = self
                .leaves
                .get(from..from + CHUNK_LEAVES as usize)?
                .to_vec();
            if self.broken == Some(index) {
                l[3][0] ^= 1;
            }
            Some(l)
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn roots_and_proofs_match_the_full_tree() {
        let all = leaves(1_300);
        let mut log = ChunkedLog::new();
        let mut full = MerkleLog::new();
        for (i, l) in all.iter().enumerate() {
            let done = log.append(*l);
            full.append(*l);
            assert_eq!(done.is_some(), (i + 1) % 256 == 0, "{i}");
            assert_eq!(log.root(), full.root(), "size {}", i + 1);
        }
        let mut src = FromLeaves {
            leaves: &all,
            reads: 0,
            broken: None,
        };
        for size in [1u64, 2, 255, 256, 257, 511, 512, 513, 1_024, 1_299, 1_300] {
            assert_eq!(
                log.root_at(size, &mut src).unwrap(),
                full.root_at(size).unwrap()
            );
            for index in [0, size / 3, size / 2, size - 1] {
                src.reads = 0;
                assert_eq!(
                    log.inclusion_proof(index, size, &mut src).unwrap(),
                    full.inclusion_proof(index, size).unwrap(),
                    "inclusion {index} in {size}"
                );
                let most = if size == log.size() { 1 } else { 3 };
                assert!(src.reads <= most, "{} chunk reads", src.reads);
            }
            for old in [1u64, 3, 255, 256, 300, 700, 1_024, 1_299] {
                if old > size {
                    continue;
                }
                src.reads = 0;
                let p = log.consistency_proof(old, size, &mut src).unwrap();
                assert_eq!(
                    p,
                    full.consistency_proof(old, size).unwrap(),
                    "{old}->{size}"
                );
                assert!(src.reads <= 3, "{} chunk reads", src.reads);
                merkle::verify_consistency(
                    &TreeHead {
                        size: old,
                        root: full.root_at(old).unwrap(),
                    },
                    &TreeHead {
                        size,
                        root: full.root_at(size).unwrap(),
                    },
                    &p,
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn a_tree_restored_from_chunk_hashes_is_the_same_tree() {
        let all = leaves(700);
        let mut log = ChunkedLog::new();
        for l in &all {
            log.append(*l);
        }
        let mut restored = ChunkedLog::new();
        for c in 0..log.complete_chunks() {
            restored.push_chunk(log.chunk_hash(c).unwrap()).unwrap();
        }
        for l in &all[512..] {
            restored.append(*l);
        }
        assert_eq!(restored.head(), log.head());
        assert!(restored.push_chunk([0; 32]).is_err(), "tail not empty");
    }

    #[test]
    fn an_unreadable_or_changed_chunk_is_named() {
        let all = leaves(600);
        let mut log = ChunkedLog::new();
        for l in &all {
            log.append(*l);
        }
        let mut none = NoChunks;
        assert_eq!(
            log.inclusion_proof(3, 600, &mut none),
            Err(MerkleError::ChunkUnavailable { chunk: 0 })
        );
        // The current root needs no chunk.
        assert_eq!(log.root_at(600, &mut none).unwrap(), root(&all));
        let mut src = FromLeaves {
            leaves: &all,
            reads: 0,
            broken: Some(1),
        };
        assert_eq!(
            log.inclusion_proof(300, 600, &mut src),
            Err(MerkleError::ChunkMismatch { chunk: 1 })
        );
        assert!(log.inclusion_proof(3, 600, &mut src).is_ok());
        assert!(matches!(
            log.root_at(601, &mut src),
            Err(MerkleError::SizeOutOfRange { .. })
        ));
    }
}
