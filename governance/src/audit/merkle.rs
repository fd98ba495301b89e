//! RFC 6962 Merkle trees (SHA-256), as RFC 9162 §2.1 restates them:
//! tree hashes, inclusion proofs and consistency proofs, and their
//! verification.
//!
//! * leaf hash `= SHA-256(0x00 ‖ leaf data)`
//! * node hash `= SHA-256(0x01 ‖ left ‖ right)`
//! * the root of the empty tree is `SHA-256("")`
//! * `MTH(D[n])` splits at `k`, the largest power of two below `n`.
//!
//! In the audit log the leaf data of record *i* is its 32-byte chain hash
//! ([`super::Record::leaf_hash`]). Functions here take *leaf hashes*.

use sha2::{Digest, Sha256};

use super::Hash;

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of a leaf: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A tree size and its root: what a checkpoint asserts and a verifier trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeHead {
    /// Number of leaves.
    pub size: u64,
    /// `MTH` of those leaves.
    pub root: Hash,
}

/// Why a proof cannot be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// A leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A tree size is above the number of leaves held.
    #[error("tree size {size} is above the {have} leaves held")]
    SizeOutOfRange {
        /// The size asked for.
        size: u64,
        /// Leaves held.
        have: u64,
    },
    /// A consistency proof from the empty tree was asked for or given: any
    /// tree extends the empty tree, so there is nothing to prove.
    #[error("a consistency proof from the empty tree is meaningless")]
    EmptyOldTree,
    /// The old size of a consistency proof is above the new size.
    #[error("old tree size {old} is above new tree size {new}")]
    OldLarger {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// The proof has the wrong number of hashes for the sizes given.
    #[error("the proof has the wrong number of hashes ({len}) for these tree sizes")]
    WrongProofLength {
        /// Hashes in the proof.
        len: usize,
    },
    /// Sizes are equal but the roots differ.
    #[error("equal tree sizes {size} but different roots")]
    DifferentRoots {
        /// The size.
        size: u64,
    },
    /// The proof leads to a different root than the one expected.
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    /// The leaves of a chunk of a [`super::ChunkedLog`] could not be read.
    #[error("the leaves of chunk {chunk} (the 256 leaves from {first}) could not be read", first = .chunk.saturating_mul(256))]
    ChunkUnavailable {
        /// The chunk index.
        chunk: u64,
    },
    /// The leaves read for a chunk of a [`super::ChunkedLog`] do not hash to
    /// the chunk hash it holds: the records under it changed.
    #[error("the leaves of chunk {chunk} do not hash to the chunk hash held for it")]
    ChunkMismatch {
        /// The chunk index.
        chunk: u64,
    },
}

/// Something that can answer `MTH(D[start..end])`.
pub(super) trait Subtrees {
    fn size(&self) -> u64;
    fn subtree(&self, start: u64, end: u64) -> Option<Hash>;
}

/// The largest power of two strictly below `n` (`n >= 2`).
pub(super) const fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

pub(super) struct Slice<'a>(pub(super) &'a [Hash]);

impl Subtrees for Slice<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn subtree(&self, start: u64, end: u64) -> Option<Hash> {
        let n = end.checked_sub(start)?;
        match n {
            0 => (start == end).then_some(EMPTY_ROOT),
            1 => self.0.get(usize::try_from(start).ok()?).copied(),
            _ => {
                let k = split_point(n);
                Some(node_hash(
                    &self.subtree(start, start + k)?,
                    &self.subtree(start + k, end)?,
                ))
            }
        }
    }
}

/// `MTH` of `leaf_hashes` (RFC 6962 §2.1), in O(n).
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    Slice(leaf_hashes)
        .subtree(0, leaf_hashes.len() as u64)
        .unwrap_or(EMPTY_ROOT)
}

/// The inclusion proof (audit path) of leaf `index` in the tree of all of
/// `leaf_hashes` (RFC 6962 §2.1.1).
///
/// # Errors
/// [`MerkleError::IndexOutOfRange`].
pub fn inclusion_proof(leaf_hashes: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let t = Slice(leaf_hashes);
    make_inclusion(&t, index, t.size())
}

/// The consistency proof from the first `old_size` of `leaf_hashes` to all
/// of them (RFC 6962 §2.1.2).
///
/// # Errors
/// [`MerkleError::EmptyOldTree`] or [`MerkleError::OldLarger`].
pub fn consistency_proof(leaf_hashes: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let t = Slice(leaf_hashes);
    make_consistency(&t, old_size, t.size())
}

pub(super) fn make_inclusion(
    t: &impl Subtrees,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if size > t.size() {
        return Err(MerkleError::SizeOutOfRange {
            size,
            have: t.size(),
        });
    }
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    // PATH(m, D[start..end]), iteratively from the root down; hashes are
    // collected top-down and returned bottom-up.
    let mut path = Vec::new();
    let (mut start, mut end, m) = (0u64, size, index);
    while end - start > 1 {
        let k = split_point(end - start);
        let sibling = if m < start + k {
            let s = t.subtree(start + k, end);
            end = start + k;
            s
        } else {
            let s = t.subtree(start, start + k);
            start += k;
            s
        };
        path.push(sibling.ok_or(MerkleError::SizeOutOfRange {
            size,
            have: t.size(),
        })?);
    }
    path.reverse();
    Ok(path)
}

pub(super) fn make_consistency(
    t: &impl Subtrees,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if new > t.size() {
        return Err(MerkleError::SizeOutOfRange {
            size: new,
            have: t.size(),
        });
    }
    if old > new {
        return Err(MerkleError::OldLarger { old, new });
    }
    if old == 0 {
        return Err(MerkleError::EmptyOldTree);
    }
    let missing = MerkleError::SizeOutOfRange {
        size: new,
        have: t.size(),
    };
    // SUBPROOF(m, D[start..end], b), iteratively.
    let mut proof = Vec::new();
    let (mut start, mut end, mut m, mut b) = (0u64, new, old, true);
    loop {
        let n = end - start;
        if m == n {
            if !b {
                proof.push(t.subtree(start, end).ok_or(missing.clone())?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            proof.push(t.subtree(start + k, end).ok_or(missing.clone())?);
            end = start + k;
        } else {
            proof.push(t.subtree(start, start + k).ok_or(missing.clone())?);
            start += k;
            m -= k;
            b = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks that `proof` proves the leaf with hash `leaf` at `index` in the
/// tree of `size` leaves whose root is `root` (RFC 9162 §2.1.3.2).
///
/// # Errors
/// [`MerkleError::IndexOutOfRange`], [`MerkleError::WrongProofLength`] or
/// [`MerkleError::RootMismatch`].
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(MerkleError::WrongProofLength { len: proof.len() });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::WrongProofLength { len: proof.len() });
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Checks that `proof` proves the tree `old` is a prefix of the tree `new`
/// (RFC 9162 §2.1.4.2). Equal sizes need equal roots and an empty proof; an
/// old size of 0 is refused ([`MerkleError::EmptyOldTree`]), as in the
/// transparency-dev reference: the caller decides what the empty tree means.
///
/// # Errors
/// Any [`MerkleError`] but the index ones.
pub fn verify_consistency(
    old: &TreeHead,
    new: &TreeHead,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old.size > new.size {
        return Err(MerkleError::OldLarger {
            old: old.size,
            new: new.size,
        });
    }
    if old.size == 0 {
        return Err(MerkleError::EmptyOldTree);
    }
    if old.size == new.size {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength { len: proof.len() });
        }
        if old.root != new.root {
            return Err(MerkleError::DifferentRoots { size: old.size });
        }
        return Ok(());
    }
    let wrong_len = MerkleError::WrongProofLength { len: proof.len() };
    // If the old size is a power of two, the old root is the first node of the path.
    let (first, rest) = if old.size.is_power_of_two() {
        (&old.root, proof)
    } else {
        proof.split_first().ok_or(wrong_len.clone())?
    };
    let (mut fnode, mut snode) = (old.size - 1, new.size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(wrong_len);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_len);
    }
    if fr != old.root || sr != new.root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// An append-only Merkle tree over leaf hashes that answers roots and proofs
/// for any size up to its own.
///
/// It keeps every leaf hash and, level by level, the hash of every complete
/// aligned subtree (about 2n hashes in all). Appending is O(log n) (O(1)
/// amortised); a root or a subtree hash at any size is O(log n) lookups and
/// hashes, a proof O(log² n).
#[derive(Debug, Clone, Default)]
pub struct MerkleLog {
    /// `levels[h][i]` = MTH of leaves `i·2^h .. (i+1)·2^h`.
    levels: Vec<Vec<Hash>>,
}

impl MerkleLog {
    /// An empty tree.
    pub fn new() -> MerkleLog {
        MerkleLog::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash (see [`leaf_hash`]).
    pub fn append(&mut self, leaf: Hash) {
        let mut carry = leaf;
        let mut h = 0usize;
        loop {
            if self.levels.len() <= h {
                self.levels.push(Vec::new());
            }
            let Some(level) = self.levels.get_mut(h) else {
                return;
            };
            level.push(carry);
            if level.len() % 2 == 1 {
                return;
            }
            match level.get(level.len() - 2..) {
                Some([l, r]) => carry = node_hash(l, r),
                _ => return,
            }
            h += 1;
        }
    }

    /// Appends the leaf whose data is `data`.
    pub fn append_data(&mut self, data: &[u8]) {
        self.append(leaf_hash(data));
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.subtree(0, self.size()).unwrap_or(EMPTY_ROOT)
    }

    /// The tree head at the current size.
    pub fn head(&self) -> TreeHead {
        TreeHead {
            size: self.size(),
            root: self.root(),
        }
    }

    /// The root of the first `size` leaves.
    ///
    /// # Errors
    /// [`MerkleError::SizeOutOfRange`].
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        self.subtree(0, size).ok_or(MerkleError::SizeOutOfRange {
            size,
            have: self.size(),
        })
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    ///
    /// # Errors
    /// [`MerkleError::IndexOutOfRange`] or [`MerkleError::SizeOutOfRange`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        make_inclusion(self, index, size)
    }

    /// The consistency proof from the first `old` leaves to the first `new`.
    ///
    /// # Errors
    /// [`MerkleError::EmptyOldTree`], [`MerkleError::OldLarger`] or
    /// [`MerkleError::SizeOutOfRange`].
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, MerkleError> {
        make_consistency(self, old, new)
    }
}

impl Subtrees for MerkleLog {
    fn size(&self) -> u64 {
        MerkleLog::size(self)
    }

    fn subtree(&self, start: u64, end: u64) -> Option<Hash> {
        if end > self.size() || start > end {
            return None;
        }
        let n = end - start;
        if n == 0 {
            return Some(EMPTY_ROOT);
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = self.levels.get(n.trailing_zeros() as usize)?;
            return level.get(usize::try_from(start / n).ok()?).copied();
        }
        let k = split_point(n);
        Some(node_hash(
            &self.subtree(start, start + k)?,
            &self.subtree(start + k, end)?,
        ))
    }
}

/// The right edge of a tree being built leaf by leaf in O(log n) memory:
/// the roots of its complete subtrees, largest first. Gives the root at the
/// current size; used by chain verification.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompactRange {
    size: u64,
    /// (height, hash), heights strictly decreasing.
    nodes: Vec<(u32, Hash)>,
}

impl CompactRange {
    pub(crate) fn append(&mut self, leaf: Hash) {
        let mut carry = (0u32, leaf);
        while let Some(&(h, left)) = self.nodes.last() {
            if h != carry.0 {
                break;
            }
            self.nodes.pop();
            carry = (h + 1, node_hash(&left, &carry.1));
        }
        self.nodes.push(carry);
        self.size += 1;
    }

    pub(crate) fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut r)) = iter.next() else {
            return EMPTY_ROOT;
        };
        for (_, left) in iter {
            r = node_hash(left, &r);
        }
        r
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_slice_and_compact_range_agree() {
        let mut log = MerkleLog::new();
        let mut cr = CompactRange::default();
        let mut leaves = Vec::new();
        assert_eq!(log.root(), EMPTY_ROOT);
        for i in 0u32..70 {
            let l = leaf_hash(&i.to_le_bytes());
            leaves.push(l);
            log.append(l);
            cr.append(l);
            assert_eq!(log.root(), root(&leaves), "size {}", i + 1);
            assert_eq!(cr.root(), log.root());
        }
        for m in 0..=70u64 {
            assert_eq!(log.root_at(m).unwrap(), root(&leaves[..m as usize]));
        }
        assert!(log.root_at(71).is_err());
    }
}
