//! Replay protection: a pure, bounded ledger of spent nonces.

use std::collections::{BTreeMap, BTreeSet};

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
/// Time is an input; nothing here reads a clock. Storage is two B-trees (no
/// hashing, no randomness, deterministic), at most `capacity` entries each.
#[derive(Debug, Clone)]
pub struct NonceLedger {
    capacity: usize,
    /// (issuer, nonce) -> root expiry.
    seen: BTreeMap<(Fingerprint, Nonce), u64>,
    /// The same entries ordered by expiry, to forget expired ones first.
    by_expiry: BTreeSet<(u64, Fingerprint, Nonce)>,
}

impl NonceLedger {
    /// An empty ledger holding at most `capacity` unexpired nonces.
    pub fn new(capacity: usize) -> NonceLedger {
        NonceLedger {
            capacity,
            seen: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
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
            .get(&(*issuer, *nonce))
            .is_some_and(|exp| now_unix_ms < *exp)
    }

    /// Forgets every nonce whose expiry is at or before `now_unix_ms`.
    pub fn forget_expired(&mut self, now_unix_ms: u64) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now_unix_ms {
                break;
            }
            if let Some((_, issuer, nonce)) = self.by_expiry.pop_first() {
                self.seen.remove(&(issuer, nonce));
            }
        }
    }

    /// Records `(issuer, nonce)`, kept until `not_after_unix_ms`.
    ///
    /// # Errors
    /// [`TokenError::Replayed`] if it is held and unexpired;
    /// [`TokenError::Expired`] if `now_unix_ms >= not_after_unix_ms`;
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
        let key = (*issuer, *nonce);
        if self.contains(issuer, nonce, now_unix_ms) {
            return Err(TokenError::Replayed);
        }
        // Expired entries go lazily: all of them once the ledger is full,
        // and otherwise the few oldest, so work per call stays small.
        if self.seen.len() >= self.capacity {
            self.forget_expired(now_unix_ms);
        } else {
            for _ in 0..2 {
                match self.by_expiry.first() {
                    Some(first) if first.0 <= now_unix_ms => {
                        if let Some((_, i, n)) = self.by_expiry.pop_first() {
                            self.seen.remove(&(i, n));
                        }
                    }
                    _ => break,
                }
            }
        }
        if let Some(old) = self.seen.remove(&key) {
            // Held but expired (and not yet forgotten).
            self.by_expiry.remove(&(old, key.0, key.1));
        }
        if self.seen.len() >= self.capacity {
            return Err(TokenError::LedgerFull {
                capacity: self.capacity,
            });
        }
        self.seen.insert(key, not_after_unix_ms);
        self.by_expiry.insert((not_after_unix_ms, key.0, key.1));
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
