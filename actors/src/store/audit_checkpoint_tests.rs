//! `AuditLog::verify_all_against`: a log checked against the tree heads of
//! the checkpoints its node signed, in a real store folder whose audit file
//! is cut or rewritten while the store is closed. A cut tail is named at
//! the first missing record; a history rewritten consistently (every hash
//! recomputed, every frame's checksum too, which the chain alone accepts)
//! is named at the first record no earlier checkpoint vouches for.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use mxp_governance::audit::{EventData, EventKind, merkle};

use super::super::tamper;
use super::*;

fn event(i: u64, note: &str) -> AuditEvent {
    let data = EventData::from_value(&serde_json::json!({"i": i, "note": note})).unwrap();
    AuditEvent::new(1_000 + i, EventKind::KillSwitch { engaged: false }, data).with_trace(i)
}

const N: u64 = 1_000;

/// A store holding `N` records of `note` (appended in batches of 50), and
/// the tree heads at 250, 500, 750 and 1000 (as the node's checkpoints
/// would name them).
fn log_with_heads(dir: &std::path::Path, note: &str) -> (Arc<Store>, Vec<TreeHead>) {
    let store = Store::open(dir).unwrap();
    let mut log = AuditLog::open(store.clone()).unwrap();
    for start in (0..N).step_by(50) {
        log.append_batch((start..start + 50).map(|i| event(i, note)).collect())
            .unwrap();
    }
    let leaves: Vec<Hash> = log
        .read(0, N as usize)
        .unwrap()
        .iter()
        .map(Record::leaf_hash)
        .collect();
    let heads = [250u64, 500, 750, 1000]
        .iter()
        .map(|&size| TreeHead {
            size,
            root: merkle::root(&leaves[..size as usize]),
        })
        .collect();
    (store, heads)
}

fn violation(e: &StoreError) -> (u64, AuditViolation) {
    match e {
        StoreError::AuditCorrupt { seq, violation, .. } => (*seq, violation.clone()),
        other => panic!("not an AuditCorrupt: {other}"),
    }
}

#[test]
fn a_log_that_matches_its_checkpoints_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (store, heads) = log_with_heads(dir.path(), "a");
    let log = AuditLog::open(store).unwrap();
    assert_eq!(log.verify_all_against(&heads).unwrap().count(), N);
    // Repeated or unsorted heads change nothing; size 0 is no claim.
    let mut noisy = heads.clone();
    noisy.insert(1, heads[0]);
    noisy.insert(
        0,
        TreeHead {
            size: 0,
            root: [9; 32],
        },
    );
    assert_eq!(log.verify_all_against(&noisy).unwrap().count(), N);
}

#[test]
fn a_cut_log_is_named_at_its_first_missing_record() {
    let dir = tempfile::tempdir().unwrap();
    let (store, heads) = log_with_heads(dir.path(), "a");
    drop(store);
    // Cut after record 599 (a batch's end).
    let bytes = tamper::read(dir.path());
    tamper::cut(dir.path(), tamper::frames(&bytes)[600].start);
    // Reopened, the cut log is self-consistent: only the checkpoints show it.
    let log = AuditLog::open(Store::open(dir.path()).unwrap()).unwrap();
    assert_eq!(log.verify_all().unwrap().count(), 600);
    let e = log.verify_all_against(&heads).unwrap_err();
    assert_eq!(
        violation(&e),
        (600, AuditViolation::CutBelowCheckpoint { size: 750 })
    );
    assert!(e.to_string().contains("cut"), "{e}");
}

#[test]
fn a_consistently_rewritten_history_is_named_after_the_last_checkpoint_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (store, heads) = log_with_heads(dir.path(), "a");
    // Records from 600 on rewritten, every hash recomputed, chained to the
    // genuine record 599: the chain alone cannot tell.
    let genuine = AuditLog::open(store.clone()).unwrap();
    let kept = genuine.read(599, 1).unwrap();
    drop(genuine);
    drop(store);
    let mut chain = Chain::resume(
        ChainHead {
            next_seq: 600,
            last_hash: *kept[0].hash(),
        },
        Limits::default(),
    );
    let bytes = tamper::read(dir.path());
    let mut rewritten = bytes[..tamper::frames(&bytes)[600].start].to_vec();
    for i in 600..N {
        let r = chain.append(event(i, "forged")).unwrap();
        rewritten.extend(tamper::frame(&r.encode(), i + 1 == N));
    }
    tamper::write(dir.path(), &rewritten);
    let log = AuditLog::open(Store::open(dir.path()).unwrap()).unwrap();
    assert_eq!(
        log.verify_all().unwrap().count(),
        N,
        "the chain alone holds"
    );
    let e = log.verify_all_against(&heads).unwrap_err();
    // The checkpoint of 500 matches; the one of 750 does not: the first
    // record no matching checkpoint vouches for is 500.
    assert_eq!(
        violation(&e),
        (500, AuditViolation::NotInCheckpoint { size: 750 })
    );
    assert!(e.to_string().contains("rewritten"), "{e}");
}
