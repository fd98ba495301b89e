//! The audit log's signed checkpoints and the chunk hashes of its Merkle
//! tree, in the store's [`Tree::Checkpoints`]:
//!
//! * `b'h' ‖ chunk index (u64 BE)` → the 32-byte root of that chunk's 256
//!   leaves ([`mxp_governance::audit::ChunkedLog`]), so a node restores its
//!   tree at start without reading every record;
//! * `b'n' ‖ tree size (u64 BE)` → a [`StoredCheckpoint`]: the signed note
//!   (with the cosignatures witnesses sent back appended), when it was
//!   signed, and the consistency proof from the checkpoint before it.
//!
//! `'h' < 'n'`, so the tree's last key is the latest checkpoint, if any.
//! Records decode through [`Reader`], lengths checked before anything is
//! taken.

use mxp_governance::audit::Hash;
use mxp_governance::audit::note::MAX_NOTE_BYTES;
use mxp_protocol::DecodeError;
use mxp_protocol::cursor::Reader;

use super::{Entry, Store, StoreError, Tree};

const CHUNK: u8 = b'h';
const NOTE: u8 = b'n';
const VERSION: u8 = 1;
/// The most hashes a stored consistency proof holds (a proof has at most
/// 2 × 64).
const MAX_PROOF: usize = 128;

fn key(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [prefix; 9];
    for (dst, src) in k.iter_mut().skip(1).zip(n.to_be_bytes()) {
        *dst = src;
    }
    k
}

fn number(prefix: u8, key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((p, rest)) if *p == prefix => <[u8; 8]>::try_from(rest).ok().map(u64::from_be_bytes),
        _ => None,
    }
}

/// A checkpoint the node signed, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The tree size it covers.
    pub size: u64,
    /// When it was signed, Unix milliseconds.
    pub time_ms: u64,
    /// The size of the checkpoint before it (0: none).
    pub prev_size: u64,
    /// The consistency proof from `prev_size` to `size` (empty from 0).
    pub proof: Vec<Hash>,
    /// The signed note, with witnesses' cosignatures appended.
    pub note: String,
}

impl StoredCheckpoint {
    /// `version 1 ‖ size ‖ time_ms ‖ prev_size (u64 LE each) ‖ proof count
    /// (u16 LE) ‖ hashes ‖ note length (u32 LE) ‖ note`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(31 + 32 * self.proof.len() + self.note.len());
        out.push(VERSION);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&self.prev_size.to_le_bytes());
        out.extend_from_slice(&(self.proof.len() as u16).to_le_bytes());
        for h in &self.proof {
            out.extend_from_slice(h);
        }
        out.extend_from_slice(&(self.note.len() as u32).to_le_bytes());
        out.extend_from_slice(self.note.as_bytes());
        out
    }

    /// Decodes [`StoredCheckpoint::encode`]'s form.
    ///
    /// # Errors
    /// [`DecodeError`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<StoredCheckpoint, DecodeError> {
        let mut r = Reader::new(bytes, "stored checkpoint");
        if r.u8()? != VERSION {
            return Err(DecodeError::InvalidValue {
                field: "stored checkpoint version",
                reason: "unknown version",
            });
        }
        let size = r.u64_le()?;
        let time_ms = r.u64_le()?;
        let prev_size = r.u64_le()?;
        let n = usize::from(r.u16_le()?);
        if n > MAX_PROOF {
            return Err(DecodeError::LimitExceeded {
                field: "stored checkpoint proof",
                len: n,
                limit: MAX_PROOF,
            });
        }
        let mut proof = Vec::with_capacity(n);
        for _ in 0..n {
            proof.push(r.array::<32>()?);
        }
        let len = r.u32_le()? as usize;
        if len > MAX_NOTE_BYTES {
            return Err(DecodeError::LimitExceeded {
                field: "stored checkpoint note",
                len,
                limit: MAX_NOTE_BYTES,
            });
        }
        let note = std::str::from_utf8(r.take(len)?)
            .map_err(|_| DecodeError::InvalidUtf8 {
                field: "stored checkpoint note",
            })?
            .to_owned();
        r.finish()?;
        Ok(StoredCheckpoint {
            size,
            time_ms,
            prev_size,
            proof,
            note,
        })
    }
}

impl Store {
    /// Writes `checkpoint` and the chunk hashes `chunks` (index, hash) as
    /// one atomic, durable write.
    ///
    /// # Errors
    /// [`StoreError`]; the write may or may not have happened (as a whole).
    pub fn put_checkpoint(
        &self,
        checkpoint: &StoredCheckpoint,
        chunks: &[(u64, Hash)],
    ) -> Result<(), StoreError> {
        let mut entries: Vec<Entry> = chunks
            .iter()
            .map(|(i, h)| (key(CHUNK, *i).to_vec(), h.to_vec()))
            .collect();
        entries.push((key(NOTE, checkpoint.size).to_vec(), checkpoint.encode()));
        self.engine.put_batch(Tree::Checkpoints, &entries)
    }

    /// The checkpoint of `size`, if the node signed one.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if it does not decode; [`StoreError::Engine`].
    pub fn checkpoint(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        let k = key(NOTE, size);
        self.engine
            .get(Tree::Checkpoints, &k)?
            .map(|v| self.decode_checkpoint(&k, &v))
            .transpose()
    }

    /// The first checkpoint covering more than `size` records, if any.
    ///
    /// # Errors
    /// As [`Store::checkpoint`].
    pub fn checkpoint_after(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        let Some(from) = size.checked_add(1) else {
            return Ok(None);
        };
        let rows = self.engine.range(Tree::Checkpoints, &key(NOTE, from), 1)?;
        rows.into_iter()
            .find(|(k, _)| number(NOTE, k).is_some())
            .map(|(k, v)| self.decode_checkpoint(&k, &v))
            .transpose()
    }

    /// The latest checkpoint, if any.
    ///
    /// # Errors
    /// As [`Store::checkpoint`].
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        match self.engine.last(Tree::Checkpoints)? {
            Some((k, v)) if number(NOTE, &k).is_some() => self.decode_checkpoint(&k, &v).map(Some),
            _ => Ok(None),
        }
    }

    /// The stored chunk hashes, in order from chunk 0 up to the first one
    /// missing.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a value that is not 32 bytes;
    /// [`StoreError::Engine`].
    pub fn chunk_hashes(&self) -> Result<Vec<Hash>, StoreError> {
        let mut out = Vec::new();
        loop {
            let rows = self
                .engine
                .range(Tree::Checkpoints, &key(CHUNK, out.len() as u64), 1024)?;
            let full = rows.len() == 1024;
            for (k, v) in rows {
                if number(CHUNK, &k) != Some(out.len() as u64) {
                    return Ok(out);
                }
                let hash: Hash = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt(Tree::Checkpoints, &k, "a chunk hash is 32 bytes"))?;
                out.push(hash);
            }
            if !full {
                return Ok(out);
            }
        }
    }

    fn decode_checkpoint(&self, k: &[u8], v: &[u8]) -> Result<StoredCheckpoint, StoreError> {
        let cp = StoredCheckpoint::decode(v)
            .map_err(|e| self.corrupt(Tree::Checkpoints, k, &e.to_string()))?;
        if number(NOTE, k) != Some(cp.size) {
            return Err(self.corrupt(
                Tree::Checkpoints,
                k,
                "the checkpoint is stored under another size",
            ));
        }
        Ok(cp)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cp(size: u64) -> StoredCheckpoint {
        StoredCheckpoint {
            size,
            time_ms: 1_000 + size,
            prev_size: size / 2,
            proof: vec![[size as u8; 32]; 3],
            note: format!("o\n{size}\nroot\n\n— o sig\n"),
        }
    }

    #[test]
    fn checkpoints_and_chunks_round_trip_and_are_found_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        assert_eq!(store.latest_checkpoint().unwrap(), None);
        assert!(store.chunk_hashes().unwrap().is_empty());
        store.put_checkpoint(&cp(10), &[(0, [1; 32])]).unwrap();
        store
            .put_checkpoint(&cp(700), &[(1, [2; 32]), (2, [3; 32])])
            .unwrap();
        store.put_checkpoint(&cp(300), &[]).unwrap();
        assert_eq!(store.latest_checkpoint().unwrap(), Some(cp(700)));
        assert_eq!(store.checkpoint(300).unwrap(), Some(cp(300)));
        assert_eq!(store.checkpoint(301).unwrap(), None);
        assert_eq!(store.checkpoint_after(0).unwrap(), Some(cp(10)));
        assert_eq!(store.checkpoint_after(10).unwrap(), Some(cp(300)));
        assert_eq!(store.checkpoint_after(699).unwrap(), Some(cp(700)));
        assert_eq!(store.checkpoint_after(700).unwrap(), None);
        assert_eq!(store.checkpoint_after(u64::MAX).unwrap(), None);
        assert_eq!(
            store.chunk_hashes().unwrap(),
            vec![[1; 32], [2; 32], [3; 32]]
        );
        // A gap ends the list: what follows is recomputed from records.
        store.put_checkpoint(&cp(2_000), &[(5, [5; 32])]).unwrap();
        assert_eq!(store.chunk_hashes().unwrap().len(), 3);
    }

    #[test]
    fn bad_stored_bytes_are_named() {
        let bytes = cp(7).encode();
        assert_eq!(StoredCheckpoint::decode(&bytes).unwrap(), cp(7));
        for cut in 0..bytes.len() {
            assert!(StoredCheckpoint::decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(StoredCheckpoint::decode(&extra).is_err());
        let mut many = bytes;
        many[25] = 0xff;
        many[26] = 0xff;
        assert!(matches!(
            StoredCheckpoint::decode(&many),
            Err(DecodeError::LimitExceeded { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        store
            .engine
            .put(Tree::Checkpoints, &key(NOTE, 5), &cp(6).encode())
            .unwrap();
        let e = store.checkpoint(5).unwrap_err();
        assert!(e.to_string().contains("another size"), "{e}");
        store
            .engine
            .put(Tree::Checkpoints, &key(CHUNK, 0), &[1; 31])
            .unwrap();
        assert!(store.chunk_hashes().is_err());
    }
}
