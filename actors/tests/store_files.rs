//! The node's store file (`store.redb`) under attack, through the public
//! API as the node opens it (`Store::open`):
//!
//! * **Corrupt or cut short.** A store holding the kill switch, broker
//!   outcomes and a 1,000-record audit log is closed, then its file is cut
//!   at every page boundary and at seeded random lengths (0 included), and
//!   a byte is flipped at five places of every page, at seeded random
//!   offsets, and inside stored audit records. Each open either is refused
//!   with a `StoreError::Engine` naming the file, leaving the file byte for
//!   byte as it was, or opens a store whose every value is what was
//!   written (a flip in a page redb does not use); a flip inside a stored
//!   record is always refused; never a panic, never a silently changed
//!   store.
//! * **A lock held by a dying process.** A child process (this test binary
//!   re-executed) holds the store; opening it is refused naming the file;
//!   the child is killed with SIGKILL and the store is opened at once,
//!   waiting for the lock the dying process still holds.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mxp_actors::store::{AuditLog, Records, STORE_FILE, Store, StoreError};
use mxp_governance::audit::{AuditEvent, ChainHead, EventData, EventKind, Record};

const RECORDS: u64 = 1_000;
const PAGE: usize = 4096;
const HOLDER_ENV: &str = "MXP_STORE_FILES_HOLDER";
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

fn event(i: u64) -> AuditEvent {
    let data = serde_json::json!({"i": i, "pad": "p".repeat((i % 200) as usize)});
    AuditEvent::new(
        1_000 + i,
        EventKind::KillSwitch {
            engaged: i.is_multiple_of(2),
        },
        EventData::from_value(&data).unwrap(),
    )
    .with_trace(i)
}

/// What was written, to compare every successful open against.
struct Written {
    head: ChainHead,
    outcomes: Records,
    /// The stored bytes of a few audit records.
    records: Vec<Vec<u8>>,
}

fn write_store(dir: &Path) -> Written {
    let store = Store::open(dir).unwrap();
    store.set_kill_switch(true).unwrap();
    let mut outcomes = Vec::new();
    for i in 0..20u8 {
        let (k, v) = (vec![b'o', i], vec![i; 40 + usize::from(i) * 13]);
        store.put_outcome(&k, &v).unwrap();
        outcomes.push((k, v));
    }
    let mut log = AuditLog::open(store).unwrap();
    for start in (0..RECORDS).step_by(100) {
        log.append_batch((start..start + 100).map(event).collect())
            .unwrap();
    }
    let records = log
        .read(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| [0, 1, RECORDS / 2, RECORDS - 1].contains(&r.seq()))
        .map(|r| Record::encode(&r))
        .collect();
    Written {
        head: log.head(),
        outcomes,
        records,
    }
}

/// Opens the store in `dir`: `Err` if it is refused; if it opens, every
/// value must be the one written (the test fails otherwise).
fn open_and_check(dir: &Path, written: &Written, ctx: &str) -> Result<(), StoreError> {
    let store = Store::open(dir)?;
    assert!(
        store.kill_switch().unwrap(),
        "{ctx}: the kill switch changed"
    );
    assert_eq!(
        store.outcomes().unwrap(),
        written.outcomes,
        "{ctx}: outcomes changed"
    );
    let log = AuditLog::open(store).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let range = log
        .verify_all()
        .unwrap_or_else(|e| panic!("{ctx}: opened but the log changed: {e}"));
    assert_eq!(range.end, written.head, "{ctx}: the log changed");
    Ok(())
}

/// xorshift64*, seeded: random offsets and lengths.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

#[test]
fn corrupt_or_cut_store_files_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let written = write_store(&dir);
    let file = dir.join(STORE_FILE);
    let original = std::fs::read(&file).unwrap();
    let len = original.len();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("store_files: seed {seed}, file of {len} bytes");
    let mut rng = Rng(seed);
    open_and_check(&dir, &written, "untouched").unwrap();

    // Each case: the damaged bytes, and whether it must be refused.
    let mut cases: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let mut cuts: Vec<usize> = (0..len).step_by(PAGE).collect();
    cuts.extend((0..64).map(|_| rng.below(len)));
    for at in cuts {
        cases.push((format!("cut to {at} bytes"), original[..at].to_vec(), true));
    }
    let mut flips: Vec<usize> = (0..len)
        .step_by(PAGE)
        .flat_map(|p| [0, 1, 17, PAGE / 2, PAGE - 1].map(|o| p + o))
        .filter(|&at| at < len)
        .collect();
    flips.extend((0..128).map(|_| rng.below(len)));
    let mut in_records = 0;
    for record in &written.records {
        let at = original
            .windows(record.len())
            .position(|w| w == record.as_slice())
            .expect("a stored record is in the file as it was written");
        for offset in [0, record.len() / 2, record.len() - 1] {
            let mut bytes = original.clone();
            bytes[at + offset] ^= 0x20;
            cases.push((
                format!(
                    "a flip at byte {offset} of a stored record (file offset {})",
                    at + offset
                ),
                bytes,
                true,
            ));
            in_records += 1;
        }
    }
    for at in flips {
        let mut bytes = original.clone();
        bytes[at] ^= 1 << (at % 8);
        cases.push((format!("a flip at offset {at}"), bytes, false));
    }

    let (mut refused, mut intact) = (0u32, 0u32);
    for (what, bytes, must_refuse) in &cases {
        let ctx = format!("seed {seed}: {what}");
        std::fs::write(&file, bytes).unwrap();
        match open_and_check(&dir, &written, &ctx) {
            Err(StoreError::Engine { path, reason }) => {
                assert_eq!(path, file.display().to_string(), "{ctx}");
                assert!(reason.contains("opening the database"), "{ctx}: {reason}");
                assert!(
                    std::fs::read(&file).unwrap() == *bytes,
                    "{ctx}: a refused file was changed"
                );
                refused += 1;
            }
            Err(other) => panic!("{ctx}: refused, but not naming the file: {other}"),
            Ok(()) => {
                assert!(!must_refuse, "{ctx}: opened as if it were whole");
                intact += 1;
            }
        }
    }
    std::fs::write(&file, &original).unwrap();
    open_and_check(&dir, &written, "restored").unwrap();
    eprintln!(
        "store_files: seed {seed}: {} cases ({in_records} flips in stored records): {refused} refused naming the file, {intact} flips in unused bytes opened with every value intact",
        cases.len()
    );
    assert!(in_records >= 12, "{in_records}");
}

/// The child of the lock test: holds the store until it is killed.
#[test]
#[ignore = "the lock test's child process, run by the parent with MXP_STORE_FILES_HOLDER set"]
fn holder() {
    let Some(dir) = std::env::var_os(HOLDER_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir)).unwrap();
    store.set_kill_switch(true).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "held").unwrap();
    out.flush().unwrap();
    // Blocks until the parent kills it (stdin stays open).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_store_a_killed_process_held_is_opened_once_its_lock_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "holder",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_ENV, &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(LINE_TIMEOUT)
            .expect("the holder reports that it holds the store");
        // libtest prints `test holder ... ` without a newline before it.
        if line.ends_with("held") {
            break;
        }
    }
    let e = Store::open(&dir).unwrap_err();
    let file = dir.join(STORE_FILE).display().to_string();
    assert!(
        matches!(&e, StoreError::Engine { path, reason } if *path == file && reason.contains("open in another process")),
        "{e}"
    );
    // Child::kill sends SIGKILL and returns before the process is gone; the
    // open waits for the lock it still holds.
    child.kill().unwrap();
    let store = Store::open(&dir).unwrap_or_else(|e| panic!("after the holder was killed: {e}"));
    assert!(
        store.kill_switch().unwrap(),
        "what the holder wrote is there"
    );
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}
