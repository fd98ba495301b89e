//! The redb engine on real files in temporary folders: every method of
//! [`Engine`], across reopening; a new file made whole; files that are not
//! a store refused naming the file.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use super::*;

const TREES: [Tree; 4] = [Tree::State, Tree::Approvals, Tree::Audit, Tree::Outcomes];

fn entries(keys: &[&[u8]]) -> Records {
    keys.iter()
        .map(|k| (k.to_vec(), [b"v-".as_slice(), k].concat()))
        .collect()
}

fn reason(e: &StoreError) -> (&str, &str) {
    match e {
        StoreError::Engine { path, reason } => (path, reason),
        other => panic!("not an engine error: {other}"),
    }
}

#[test]
fn every_method_reads_back_what_was_written_also_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.redb");
    let engine = RedbEngine::open(&file).unwrap();
    assert_eq!(engine.path(), file.display().to_string());
    // Trees never written read as empty.
    for tree in TREES {
        assert_eq!(engine.get(tree, b"k").unwrap(), None);
        assert!(engine.scan(tree).unwrap().is_empty());
        assert!(engine.range(tree, b"", 10).unwrap().is_empty());
        assert_eq!(engine.last(tree).unwrap(), None);
    }
    engine.put_batch(Tree::Audit, &[]).unwrap();
    assert!(engine.scan(Tree::Audit).unwrap().is_empty());

    engine.put(Tree::State, b"k", b"1").unwrap();
    engine.put(Tree::State, b"k", b"2").unwrap();
    assert_eq!(engine.get(Tree::State, b"k").unwrap(), Some(b"2".to_vec()));
    // Trees are separate key spaces.
    assert_eq!(engine.get(Tree::Approvals, b"k").unwrap(), None);

    // Written out of order, read back in key order.
    let batch = entries(&[b"d", b"a", b"c", b"b", b"e", b""]);
    engine.put_batch(Tree::Audit, &batch).unwrap();
    let mut sorted = batch.clone();
    sorted.sort();
    assert_eq!(engine.scan(Tree::Audit).unwrap(), sorted);
    assert_eq!(engine.range(Tree::Audit, b"b", 2).unwrap(), sorted[2..4]);
    assert_eq!(engine.range(Tree::Audit, b"bb", 100).unwrap(), sorted[3..]);
    assert!(engine.range(Tree::Audit, b"f", 100).unwrap().is_empty());
    assert!(engine.range(Tree::Audit, b"a", 0).unwrap().is_empty());
    assert_eq!(engine.last(Tree::Audit).unwrap(), sorted.last().cloned());

    engine.delete(Tree::Audit, b"e").unwrap();
    engine.delete(Tree::Audit, b"absent").unwrap();
    engine.delete(Tree::Outcomes, b"never written").unwrap();
    assert_eq!(engine.last(Tree::Audit).unwrap(), Some(sorted[4].clone()));
    engine
        .put(Tree::Outcomes, &[0xff; 300], &[7; 70_000])
        .unwrap();
    drop(engine);

    let engine = RedbEngine::open(&file).unwrap();
    assert_eq!(engine.get(Tree::State, b"k").unwrap(), Some(b"2".to_vec()));
    assert_eq!(engine.scan(Tree::Audit).unwrap(), sorted[..5]);
    assert_eq!(
        engine.scan(Tree::Outcomes).unwrap(),
        vec![(vec![0xff; 300], vec![7; 70_000])]
    );
    assert!(engine.scan(Tree::Approvals).unwrap().is_empty());
}

#[test]
fn a_new_file_appears_whole_and_an_unfinished_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.redb");
    let new = dir.path().join("store.redb.new");
    // What a process killed while making the file leaves behind: half a
    // file under the temporary name.
    std::fs::write(&new, vec![0x5a; 10_000]).unwrap();
    let engine = RedbEngine::open(&file).unwrap();
    assert!(!new.exists(), "the unfinished file was replaced and linked");
    engine.put(Tree::State, b"k", b"v").unwrap();
    drop(engine);
    // An existing file is opened, never made again.
    let engine = RedbEngine::open(&file).unwrap();
    assert_eq!(engine.get(Tree::State, b"k").unwrap(), Some(b"v".to_vec()));
    assert!(!new.exists());
}

#[test]
fn files_that_are_not_a_store_are_refused_naming_the_file_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.redb");
    for (what, bytes, says) in [
        ("empty", Vec::new(), "empty"),
        (
            "text",
            b"not a database\n".repeat(1_000),
            "Not a redb database",
        ),
        ("one byte", vec![0], "Not a redb database"),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        let e = RedbEngine::open(&file).unwrap_err();
        let (path, reason) = reason(&e);
        assert_eq!(path, file.display().to_string(), "{what}");
        assert!(reason.contains(says), "{what}: {e}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            bytes,
            "{what}: left as it was"
        );
    }
    // A folder where the file should be.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let e = RedbEngine::open(&file).unwrap_err();
    assert_eq!(reason(&e).0, file.display().to_string());
    // A file in a folder that does not exist (the engine does not make it).
    let missing = dir.path().join("missing/store.redb");
    let e = RedbEngine::open(&missing).unwrap_err();
    assert_eq!(reason(&e).0, missing.display().to_string());
    assert!(reason(&e).1.contains("No such file"), "{e}");
}

#[test]
fn a_file_another_store_holds_is_refused_after_waiting_for_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.redb");
    let held = RedbEngine::open(&file).unwrap();
    let e = RedbEngine::open(&file).unwrap_err();
    let (path, reason) = reason(&e);
    assert_eq!(path, file.display().to_string());
    assert!(reason.contains("open in another process or store"), "{e}");
    drop(held);
    RedbEngine::open(&file).unwrap();
}
