//! The durable ledger of outcomes, over the node's store.

use std::sync::{Arc, Mutex};

use mxp_actors::store::Store;

use super::rules::{self, Begin, OutcomeError};
use super::{IdempotencyKey, Outcome, Record, State};

/// How much the ledger keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerSettings {
    /// Landed and failed records older than this are pruned, Unix ms
    /// (in-doubt records stay until resolved).
    pub retention_ms: u64,
    /// Most records kept; at the bound the oldest finished ones go first.
    pub max_records: usize,
}

impl Default for LedgerSettings {
    fn default() -> LedgerSettings {
        LedgerSettings {
            retention_ms: 24 * 3600 * 1000,
            max_records: 100_000,
        }
    }
}

/// The outcome of every effectful attempt, by idempotency key. Every write
/// is durable before it returns.
#[derive(Debug)]
pub struct OutcomeLedger {
    store: Arc<Store>,
    settings: LedgerSettings,
    // Serialises check-then-write per ledger; the count of records.
    len: Mutex<usize>,
}

fn store_err(e: impl std::fmt::Display) -> OutcomeError {
    OutcomeError::Store(e.to_string())
}

impl OutcomeLedger {
    /// Opens the ledger; every record left pending (the node died while it
    /// ran) becomes in doubt, durably, and is returned.
    ///
    /// # Errors
    /// [`OutcomeError::Store`] naming a record that does not decode.
    pub fn open(
        store: Arc<Store>,
        settings: LedgerSettings,
        now_ms: u64,
    ) -> Result<(OutcomeLedger, Vec<(IdempotencyKey, Record)>), OutcomeError> {
        let records = store.outcomes().map_err(store_err)?;
        let mut recovered = Vec::new();
        let len = records.len();
        for (k, v) in records {
            let key = key_of(&k)?;
            let r = Record::decode(&v).map_err(|e| {
                OutcomeError::Store(format!("{}: outcome {key}: {e}", store.path()))
            })?;
            if let Some(r) = rules::recover(r, now_ms) {
                store.put_outcome(&k, &r.encode()).map_err(store_err)?;
                recovered.push((key, r));
            }
        }
        Ok((
            OutcomeLedger {
                store,
                settings,
                len: Mutex::new(len),
            },
            recovered,
        ))
    }

    /// Checks `key` and, when the attempt may act, durably records it as
    /// pending.
    ///
    /// # Errors
    /// [`OutcomeError`] for an attempt that must not act.
    pub fn begin(
        &self,
        key: IdempotencyKey,
        tool: &str,
        now_ms: u64,
    ) -> Result<Begin, OutcomeError> {
        let mut len = self.len.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = self.get(&key)?;
        let begin = rules::begin(key, tool, recorded.as_ref())?;
        if begin == Begin::Proceed {
            if recorded.is_none() && *len >= self.settings.max_records {
                *len = self.prune(now_ms)?;
                if *len >= self.settings.max_records {
                    return Err(OutcomeError::Store(format!(
                        "the outcome ledger holds {} in-doubt or running effects, its bound; resolve some",
                        *len
                    )));
                }
            }
            let r = Record {
                tool: tool.into(),
                started_ms: now_ms,
                state: State::Pending,
            };
            self.store
                .put_outcome(&key.0, &r.encode())
                .map_err(store_err)?;
            if recorded.is_none() {
                *len += 1;
            }
        }
        Ok(begin)
    }

    /// Records how the attempt begun under `key` ended.
    ///
    /// # Errors
    /// [`OutcomeError::Store`].
    pub fn finish(
        &self,
        key: IdempotencyKey,
        tool: &str,
        started_ms: u64,
        outcome: Outcome,
        output: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<(), OutcomeError> {
        let r = Record {
            tool: tool.into(),
            started_ms,
            state: State::Done {
                outcome,
                finished_ms: now_ms,
                output: output.filter(|_| outcome == Outcome::Landed),
            },
        };
        self.store
            .put_outcome(&key.0, &r.encode())
            .map_err(store_err)
    }

    /// The record of `key`.
    ///
    /// # Errors
    /// [`OutcomeError::Store`].
    pub fn get(&self, key: &IdempotencyKey) -> Result<Option<Record>, OutcomeError> {
        self.store
            .outcome(&key.0)
            .map_err(store_err)?
            .map(|v| {
                Record::decode(&v).map_err(|e| {
                    OutcomeError::Store(format!("{}: outcome {key}: {e}", self.store.path()))
                })
            })
            .transpose()
    }

    /// Every in-doubt record.
    ///
    /// # Errors
    /// [`OutcomeError::Store`].
    pub fn in_doubt(&self) -> Result<Vec<(IdempotencyKey, Record)>, OutcomeError> {
        let mut out = Vec::new();
        for (k, v) in self.store.outcomes().map_err(store_err)? {
            let r = Record::decode(&v).map_err(store_err)?;
            if matches!(
                r.state,
                State::Done {
                    outcome: Outcome::InDoubt,
                    ..
                }
            ) {
                out.push((key_of(&k)?, r));
            }
        }
        Ok(out)
    }

    /// An operator's verdict on an in-doubt effect: it landed (a retry is
    /// answered as landed) or it did not (a retry acts).
    ///
    /// # Errors
    /// [`OutcomeError::Store`] when `key` is not in doubt.
    pub fn resolve(
        &self,
        key: IdempotencyKey,
        landed: bool,
        now_ms: u64,
    ) -> Result<(), OutcomeError> {
        let _len = self.len.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = self.get(&key)? else {
            return Err(OutcomeError::Store(format!("no outcome has key {key}")));
        };
        if !matches!(
            r.state,
            State::Done {
                outcome: Outcome::InDoubt,
                ..
            }
        ) {
            return Err(OutcomeError::Store(format!(
                "outcome {key} is not in doubt"
            )));
        }
        let outcome = if landed {
            Outcome::Landed
        } else {
            Outcome::Failed
        };
        self.finish(key, &r.tool, r.started_ms, outcome, None, now_ms)
    }

    /// Drops finished records past retention, then the oldest finished ones
    /// down to the bound; returns how many remain.
    fn prune(&self, now_ms: u64) -> Result<usize, OutcomeError> {
        let mut finished = Vec::new();
        let records = self.store.outcomes().map_err(store_err)?;
        let mut len = records.len();
        for (k, v) in records {
            let Ok(r) = Record::decode(&v) else { continue };
            if let State::Done {
                outcome: Outcome::Landed | Outcome::Failed,
                finished_ms,
                ..
            } = r.state
            {
                finished.push((finished_ms, k));
            }
        }
        finished.sort();
        let cutoff = now_ms.saturating_sub(self.settings.retention_ms);
        let target = self.settings.max_records.saturating_mul(9) / 10;
        for (at, k) in finished {
            if at >= cutoff && len <= target {
                break;
            }
            self.store.delete_outcome(&k).map_err(store_err)?;
            len -= 1;
        }
        Ok(len)
    }
}

fn key_of(k: &[u8]) -> Result<IdempotencyKey, OutcomeError> {
    k.try_into()
        .map(IdempotencyKey)
        .map_err(|_| OutcomeError::Store(format!("an outcome key of {} bytes", k.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_survives_reopening_as_in_doubt_and_is_never_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let k = IdempotencyKey([1; 32]);
        let landed = IdempotencyKey([2; 32]);
        {
            let store = Store::open(&path).unwrap();
            let (l, rec) = OutcomeLedger::open(store, LedgerSettings::default(), 0).unwrap();
            assert!(rec.is_empty());
            assert_eq!(l.begin(k, "shell.exec", 1).unwrap(), Begin::Proceed);
            assert!(matches!(
                l.begin(k, "shell.exec", 2),
                Err(OutcomeError::InProgress { .. })
            ));
            assert_eq!(l.begin(landed, "shell.exec", 1).unwrap(), Begin::Proceed);
            l.finish(
                landed,
                "shell.exec",
                1,
                Outcome::Landed,
                Some(b"out".to_vec()),
                3,
            )
            .unwrap();
            // The node "dies" with k pending.
        }
        let store = Store::open(&path).unwrap();
        let (l, rec) = OutcomeLedger::open(store, LedgerSettings::default(), 10).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].0, k);
        assert!(matches!(
            l.begin(k, "shell.exec", 11),
            Err(OutcomeError::InDoubt { .. })
        ));
        assert_eq!(
            l.begin(landed, "shell.exec", 11).unwrap(),
            Begin::Landed(Some(b"out".to_vec()))
        );
        assert_eq!(l.in_doubt().unwrap().len(), 1);
        l.resolve(k, false, 12).unwrap();
        assert_eq!(l.begin(k, "shell.exec", 13).unwrap(), Begin::Proceed);
        assert!(l.resolve(landed, true, 14).is_err());
    }

    #[test]
    fn the_ledger_is_bounded_and_keeps_in_doubt_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let s = LedgerSettings {
            retention_ms: 1_000_000,
            max_records: 10,
        };
        let (l, _) = OutcomeLedger::open(store.clone(), s, 0).unwrap();
        for i in 0..30u8 {
            let k = IdempotencyKey([i; 32]);
            assert_eq!(l.begin(k, "t", u64::from(i)).unwrap(), Begin::Proceed);
            l.finish(k, "t", 0, Outcome::Failed, None, u64::from(i))
                .unwrap();
            assert!(store.outcomes().unwrap().len() <= 10);
        }
        // Ten effects stuck in doubt fill it: the eleventh is refused.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let (l, _) = OutcomeLedger::open(store, s, 0).unwrap();
        for i in 0..10u8 {
            let k = IdempotencyKey([i; 32]);
            l.begin(k, "t", 0).unwrap();
            l.finish(k, "t", 0, Outcome::InDoubt, None, 0).unwrap();
        }
        let e = l.begin(IdempotencyKey([99; 32]), "t", 0).unwrap_err();
        assert!(e.to_string().contains("in-doubt"), "{e}");
    }
}
