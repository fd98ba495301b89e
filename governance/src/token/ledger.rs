//! Replay protection: a pure, bounded ledger of spent nonces.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

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
/// * At most `capacity` unexpired nonces are kept. When full, the ledger
///   first forgets expired entries; if it is still full, it **refuses the new
///   token** ([`TokenError::LedgerFull`]) rather than forgetting an unexpired
///   nonce, which would let that token be replayed (fail closed). Size the
///   capacity for the peak rate of tokens times their lifetime.
///
/// Time is an input; nothing here reads a clock. Storage is a B-tree of
/// entries and a min-heap of their expiries, in one-to-one correspondence,
/// at most `capacity` each: no hashing, so no random seed, and no key an
/// issuer picks can degrade it. Work per spend is amortised O(log capacity).
#[derive(Debug, Clone)]
pub struct NonceLedger {
    capacity: usize,
    /// (nonce, issuer) -> root expiry. Nonce first: random bytes end most
    /// comparisons at the first byte.
    seen: BTreeMap<(Nonce, Fingerprint), u64>,
    /// The same entries by expiry, earliest first.
    by_expiry: BinaryHeap<Reverse<(u64, Nonce, Fingerprint)>>,
}

impl NonceLedger {
    /// An empty ledger holding at most `capacity` unexpired nonces.
    pub fn new(capacity: usize) -> NonceLedger {
        NonceLedger {
            capacity,
            seen: BTreeMap::new(),
            by_expiry: BinaryHeap::new(),
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

    /// Forgets the earliest entry if it has expired at `now_unix_ms`.
    fn forget_one(&mut self, now_unix_ms: u64) -> bool {
        match self.by_expiry.peek() {
            Some(Reverse((exp, _, _))) if *exp <= now_unix_ms => {
                if let Some(Reverse((_, nonce, issuer))) = self.by_expiry.pop() {
                    self.seen.remove(&(nonce, issuer));
                }
                true
            }
            _ => false,
        }
    }

    /// Forgets every nonce whose expiry is at or before `now_unix_ms`.
    pub fn forget_expired(&mut self, now_unix_ms: u64) {
        while self.forget_one(now_unix_ms) {}
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
        match self.seen.get(&key) {
            Some(exp) if now_unix_ms < *exp => return Err(TokenError::Replayed),
            // Held but expired: forgetting every expired entry removes it
            // (and keeps the heap and the map one-to-one).
            Some(_) => self.forget_expired(now_unix_ms),
            None if self.seen.len() >= self.capacity => self.forget_expired(now_unix_ms),
            // Forget lazily, two at most: the ledger shrinks as fast as it
            // grows, and a spend stays cheap.
            None => {
                let _ = self.forget_one(now_unix_ms) && self.forget_one(now_unix_ms);
            }
        }
        if self.seen.len() >= self.capacity {
            return Err(TokenError::LedgerFull {
                capacity: self.capacity,
            });
        }
        self.seen.insert(key, not_after_unix_ms);
        self.by_expiry
            .push(Reverse((not_after_unix_ms, *nonce, *issuer)));
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
        // Both expired entries were forgotten on the way.
        assert_eq!(l.len(), 1);
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
            assert_eq!(l.seen.len(), l.by_expiry.len());
        }
    }
}
