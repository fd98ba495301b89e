//! Tamper detection at store level, on a 10,000-event log in a real redb
//! store file (each tampering written through redb, behind the running
//! log's back): a bit flip at every byte of a record, a deleted, duplicated,
//! swapped or inserted record, a record beyond the head and a truncation are
//! each detected by `verify_all` at the right first bad sequence number; a
//! cut tail or a rewritten history, which a reopened log cannot see, is
//! detected against a checkpoint held elsewhere.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use mxp_governance::audit::{EventData, EventKind, verify_against};

use super::*;

fn event(i: u64) -> AuditEvent {
    let data = EventData::from_value(&serde_json::json!({"i": i, "note": "tamper suite"}));
    AuditEvent::new(
        1_000 + i,
        EventKind::KillSwitch {
            engaged: i.is_multiple_of(2),
        },
        data.unwrap(),
    )
    .with_trace(i)
}

fn events(range: std::ops::Range<u64>) -> Vec<AuditEvent> {
    range.map(event).collect()
}

fn seq_of(e: &StoreError) -> Option<(u64, AuditViolation)> {
    match e {
        StoreError::AuditCorrupt { seq, violation, .. } => Some((*seq, violation.clone())),
        _ => None,
    }
}

const N: u64 = 10_000;

fn raw(store: &Store, seq: u64) -> Vec<u8> {
    store
        .engine
        .get(Tree::Audit, &seq_key(seq))
        .unwrap()
        .unwrap()
}

fn put(store: &Store, seq: u64, bytes: &[u8]) {
    store.engine.put(Tree::Audit, &seq_key(seq), bytes).unwrap();
}

fn first_bad(log: &AuditLog) -> u64 {
    match log.verify_all() {
        Ok(range) => panic!("tampering went unseen ({} records verified)", range.count()),
        Err(e) => {
            seq_of(&e)
                .unwrap_or_else(|| panic!("not an AuditCorrupt: {e}"))
                .0
        }
    }
}

fn all_records(store: &Store) -> Vec<Vec<u8>> {
    (0..N).map(|s| raw(store, s)).collect()
}

#[test]
fn every_tampering_of_a_10000_event_log_is_found_at_its_first_bad_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut log = AuditLog::open(store.clone()).unwrap();
    for start in (0..N).step_by(500) {
        log.append_batch(events(start..start + 500)).unwrap();
    }
    let trusted = log.verify_all().unwrap().tree.unwrap();
    assert_eq!(trusted.size, N);
    let mut detected = 0u32;

    // A bit flip at every 3rd byte of one record and every 11th of the
    // first and the last: in every field (the framing too) of each.
    for (k, step) in [(4_321, 3), (0, 11), (N - 1, 11)] {
        let original = raw(&store, k);
        for at in (0..original.len()).step_by(step) {
            let mut bytes = original.clone();
            bytes[at] ^= 1 << (at % 8);
            put(&store, k, &bytes);
            assert_eq!(first_bad(&log), k, "bit flip at byte {at} of record {k}");
            detected += 1;
        }
        put(&store, k, &original);
    }
    log.verify_all().unwrap();

    // A deleted record.
    let k = 5_000;
    let kept = raw(&store, k);
    store.engine.delete(Tree::Audit, &seq_key(k)).unwrap();
    assert_eq!(first_bad(&log), k, "deleted");
    put(&store, k, &kept);

    // A duplicated record (record k stored again under k + 1).
    let next = raw(&store, k + 1);
    put(&store, k + 1, &kept);
    assert_eq!(first_bad(&log), k + 1, "duplicated");
    put(&store, k + 1, &next);

    // Two records swapped.
    put(&store, k, &next);
    put(&store, k + 1, &kept);
    assert_eq!(first_bad(&log), k, "swapped");
    put(&store, k, &kept);
    put(&store, k + 1, &next);
    log.verify_all().unwrap();

    // A record inserted at k: a well-formed record of another chain, the
    // rest moved up one.
    let before = all_records(&store);
    let mut other = Chain::new();
    let mut forged = None;
    for i in 0..=k {
        forged = Some(other.append(event(i + 7)).unwrap());
    }
    let mut shifted = vec![(seq_key(k).to_vec(), forged.unwrap().encode())];
    shifted.extend((k..N).map(|s| (seq_key(s + 1).to_vec(), before[s as usize].clone())));
    store.engine.put_batch(Tree::Audit, &shifted).unwrap();
    assert_eq!(first_bad(&log), k, "inserted");
    let restore: Vec<Entry> = (k..N)
        .map(|s| (seq_key(s).to_vec(), before[s as usize].clone()))
        .collect();
    store.engine.put_batch(Tree::Audit, &restore).unwrap();
    store.engine.delete(Tree::Audit, &seq_key(N)).unwrap();
    log.verify_all().unwrap();

    // A record appended behind the log's back.
    put(&store, N, &before[0]);
    assert_eq!(first_bad(&log), N, "beyond the head");
    store.engine.delete(Tree::Audit, &seq_key(N)).unwrap();

    // A truncation, seen by the live log (its head says N).
    for s in 9_000..N {
        store.engine.delete(Tree::Audit, &seq_key(s)).unwrap();
    }
    assert_eq!(first_bad(&log), 9_000, "truncated");
    detected += 6;

    // Reopened, the cut log is self-consistent; only a checkpoint held
    // elsewhere shows what is gone.
    drop(log);
    let reopened = AuditLog::open(store.clone()).unwrap();
    assert_eq!(reopened.verify_all().unwrap().count(), 9_000);
    let cut: Vec<Vec<u8>> = (0..9_000).map(|s| raw(&store, s)).collect();
    let e = verify_against(&cut, &Limits::default(), &trusted).unwrap_err();
    assert!(matches!(e, ChainError::Truncated { .. }), "{e}");

    // A rewritten history: a whole new chain of N records, event 0 changed.
    let mut rewrite = Chain::new();
    let mut rewritten = Vec::with_capacity(N as usize);
    for i in 0..N {
        let e = if i == 0 { event(N + 1) } else { event(i) };
        rewritten.push(rewrite.append(e).unwrap().encode());
    }
    let e = verify_against(&rewritten, &Limits::default(), &trusted).unwrap_err();
    assert!(matches!(e, ChainError::RootMismatch { .. }), "{e}");
    assert!(verify_against(&before, &Limits::default(), &trusted).is_ok());
    detected += 2;
    assert!(detected >= 60, "{detected} tamperings checked");
}
