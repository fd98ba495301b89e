//! Replay protection: a pure, bounded ledger of spent nonces.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BTreeMap, HashMap};

use mxp_protocol::Fingerprint;

use super::{Nonce, TokenError};

/// The nonces of tokens already used, each kept until its token's root
/// expiry, so that a token (or any token attenuated from the same root) is
/// accepted at most once.
///
/// * Keys are `(issuer, nonce)`: an issuer cannot spend another's nonces.
/// * An entry is kept while `now_unix_ms < not_after_unix_ms` of the root
///   (every attenuated token expires no later), then forgotten: a token past
///   its expiry is refused as expired anyway.
/// * At most `capacity` nonces are kept. When full, the ledger first
///   forgets expired entries; if it is still full, it **refuses the new
///   token** ([`TokenError::LedgerFull`]) rather than forgetting an unexpired
///   nonce, which would let that token be replayed (fail closed). Size the
///   capacity for the peak rate of tokens times their lifetime.
///
/// Time is an input; nothing here reads a clock. Storage is a hash map of
/// entries (SipHash under a key drawn per ledger, std's `RandomState`, so no
/// nonce an issuer picks can degrade it; nothing depends on its order) and a
/// timing wheel: each key is also listed under the 64 ms slot its
/// expiry falls in, and slots are swept in time order, a few keys per spend.
/// Work per spend is O(1) amortised; a B-tree and a heap cost a cache miss
/// per level at a node's peak of ~10^6 live nonces (benches/broker.rs).
#[derive(Clone)]
pub struct NonceLedger {
    capacity: usize,
    /// (nonce, issuer) -> root expiry.
    seen: HashMap<(Nonce, Fingerprint), u64, RandomState>,
    /// Slot (expiry rounded up to a multiple of [`SLOT_MS`], divided by it)
    /// -> the keys that expire in it. A key may be listed in a slot after
    /// its entry was replaced or forgotten: sweeping checks the map.
    slots: BTreeMap<u64, Vec<(Nonce, Fingerprint)>>,
}

/// The width of a timing-wheel slot: an expired entry is forgotten at most
/// this long after its expiry (unless the ledger is full, which forgets at
/// once what has expired).
pub(crate) const SLOT_MS: u64 = 64;
/// Keys swept per spend: the ledger shrinks faster than it grows.
const SWEEP: usize = 4;

impl std::fmt::Debug for NonceLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceLedger")
            .field("capacity", &self.capacity)
            .field("len", &self.seen.len())
            .field("slots", &self.slots.len())
            .finish()
    }
}

fn slot_of(expiry_ms: u64) -> u64 {
    expiry_ms.div_ceil(SLOT_MS)
}

impl NonceLedger {
    /// An empty ledger holding at most `capacity` unexpired nonces.
    pub fn new(capacity: usize) -> NonceLedger {
        NonceLedger {
            capacity,
            seen: HashMap::with_hasher(RandomState::new()),
            slots: BTreeMap::new(),
        }
    }

    /// The most unexpired nonces it holds.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Nonces held now (some may have expired since the last call).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Whether `(issuer, nonce)` is held and unexpired at `now_unix_ms`.
    pub fn contains(&self, issuer: &Fingerprint, nonce: &Nonce, now_unix_ms: u64) -> bool {
        self.seen
            .get(&(*nonce, *issuer))
            .is_some_and(|exp| now_unix_ms < *exp)
    }

    /// Sweeps up to `budget` keys of slots that have passed at
    /// `now_unix_ms` (all of them with `usize::MAX`), forgetting the
    /// entries that have expired.
    fn sweep(&mut self, now_unix_ms: u64, mut budget: usize) {
        while budget > 0 {
            let Some(mut slot) = self.slots.first_entry() else {
                return;
            };
            // A slot has passed once its end (slot × width) is not after now.
            if slot.key().saturating_mul(SLOT_MS) > now_unix_ms {
                return;
            }
            let keys = slot.get_mut();
            while budget > 0 {
                let Some(key) = keys.pop() else { break };
                budget -= 1;
                if let Entry::Occupied(e) = self.seen.entry(key)
                    && *e.get() <= now_unix_ms
                {
                    e.remove();
                }
            }
            if keys.is_empty() {
                slot.remove();
            }
        }
    }

    /// Forgets every nonce whose expiry is at or before `now_unix_ms`.
    pub fn forget_expired(&mut self, now_unix_ms: u64) {
        self.sweep(now_unix_ms, usize::MAX);
        // Entries expired within a slot that has not passed yet.
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, exp| *exp > now_unix_ms);
        }
    }

    /// Records `(issuer, nonce)`, kept until `not_after_unix_ms`.
    ///
    /// # Errors
    /// [`TokenError::Expired`] if `now_unix_ms >= not_after_unix_ms`;
    /// [`TokenError::Replayed`] if it is held and unexpired;
    /// [`TokenError::LedgerFull`] if `capacity` unexpired nonces are held.
    /// On error nothing changes but the forgetting of expired entries.
    pub fn spend(
        &mut self,
        issuer: &Fingerprint,
        nonce: &Nonce,
        not_after_unix_ms: u64,
        now_unix_ms: u64,
    ) -> Result<(), TokenError> {
        if now_unix_ms >= not_after_unix_ms {
            return Err(TokenError::Expired {
                not_after_unix_ms,
                now_unix_ms,
            });
        }
        let key = (*nonce, *issuer);
        if self.seen.len() >= self.capacity {
            self.forget_expired(now_unix_ms);
        } else {
            self.sweep(now_unix_ms, SWEEP);
        }
        let full = self.seen.len() >= self.capacity;
        // One hash: look up, refuse or record.
        match self.seen.entry(key) {
            Entry::Occupied(e) if now_unix_ms < *e.get() => return Err(TokenError::Replayed),
            // Held but expired: replaced (its old slot listing is skipped
            // when swept, since the map then says it expires later).
            Entry::Occupied(mut e) => {
                e.insert(not_after_unix_ms);
            }
            Entry::Vacant(_) if full => {
                return Err(TokenError::LedgerFull {
                    capacity: self.capacity,
                });
            }
            Entry::Vacant(e) => {
                e.insert(not_after_unix_ms);
            }
        }
        self.slots
            .entry(slot_of(not_after_unix_ms))
            .or_default()
            .push(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Fingerprint = Fingerprint([1; 32]);
    const B: Fingerprint = Fingerprint([2; 32]);

    #[test]
    fn replay_is_refused_until_expiry() {
        let mut l = NonceLedger::new(4);
        let n = Nonce([7; 16]);
        l.spend(&A, &n, 1000, 10).unwrap();
        assert_eq!(l.spend(&A, &n, 1000, 11), Err(TokenError::Replayed));
        assert_eq!(l.spend(&A, &n, 1000, 999), Err(TokenError::Replayed));
        assert!(l.contains(&A, &n, 999));
        assert!(!l.contains(&A, &n, 1000));
        // Another issuer's identical nonce is another nonce.
        l.spend(&B, &n, 1000, 12).unwrap();
        // At expiry the entry is free (a token that old is refused as expired).
        assert_eq!(
            l.spend(&A, &n, 1000, 1000),
            Err(TokenError::Expired {
                not_after_unix_ms: 1000,
                now_unix_ms: 1000
            })
        );
        l.spend(&A, &n, 3000, 1000).unwrap();
        // B's entry, expired at 1000, is forgotten once its slot has passed.
        l.spend(&B, &Nonce([8; 16]), 3000, 1000 + SLOT_MS).unwrap();
        assert!(!l.contains(&B, &n, 1000));
        assert_eq!(l.len(), 2, "A's renewed nonce and B's new one");
    }

    #[test]
    fn expiry_frees_capacity() {
        let mut l = NonceLedger::new(2);
        l.spend(&A, &Nonce([1; 16]), 100, 0).unwrap();
        l.spend(&A, &Nonce([2; 16]), 200, 0).unwrap();
        assert_eq!(
            l.spend(&A, &Nonce([3; 16]), 300, 50),
            Err(TokenError::LedgerFull { capacity: 2 })
        );
        assert_eq!(l.len(), 2);
        // The first expires at 100: room for one more, not two.
        l.spend(&A, &Nonce([3; 16]), 300, 100).unwrap();
        assert_eq!(
            l.spend(&A, &Nonce([4; 16]), 300, 150),
            Err(TokenError::LedgerFull { capacity: 2 })
        );
        // Unexpired nonces are never forgotten to make room.
        assert_eq!(
            l.spend(&A, &Nonce([2; 16]), 200, 150),
            Err(TokenError::Replayed)
        );
        l.forget_expired(10_000);
        assert!(l.is_empty());
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let mut l = NonceLedger::new(0);
        assert_eq!(
            l.spend(&A, &Nonce([1; 16]), 100, 0),
            Err(TokenError::LedgerFull { capacity: 0 })
        );
    }

    #[test]
    fn bounded_under_churn() {
        let mut l = NonceLedger::new(64);
        for i in 0u64..10_000 {
            let mut n = [0u8; 16];
            n[..8].copy_from_slice(&i.to_le_bytes());
            // Each nonce lives 50 ms; one arrives per ms: at most 50 live.
            l.spend(&A, &Nonce(n), i + 50, i).unwrap();
            assert!(l.len() <= 64);
            let listed: usize = l.slots.values().map(Vec::len).sum();
            assert!(listed >= l.seen.len());
            // The wheel itself stays bounded: a few slots' worth of keys.
            assert!(listed <= 64 + 4 * SLOT_MS as usize, "{listed}");
        }
    }
}
