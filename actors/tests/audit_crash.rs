//! Crash safety of the audit log (the node store's append-only audit file,
//! `audit.log`), tested the way sled tests itself: a child process appends
//! events and reports each batch only after [`AuditLog::append_batch`]
//! returned (the records are durable); the parent kills it with SIGKILL at
//! random moments, reopens the store, and checks that the chain verifies
//! from genesis, that every reported event is there with the content the
//! child wrote, and that nothing seen after an earlier kill has changed
//! (and that no batch was torn: a batch cut short by the kill is cut off
//! whole when the store is opened). Every round continues on the same
//! store, so recovery after a kill (and a kill during recovery, or during
//! the store files' creation) is exercised too.
//!
//! What a SIGKILL cannot show: the kernel's page cache outlives the
//! process, so a write that reached it but not the disk passes here. That
//! the records are on the disk when `append_batch` returns rests on the
//! audit file's `fdatasync` (`File::sync_data`) after each batch's write,
//! before it returns (docs/DESIGN.md, "One store"); sled, the engine before
//! redb, passed this test while calling only `sync_file_range`.
//!
//! **The child** is this test binary re-executed
//! ([`std::env::current_exe`]) as
//! `audit_crash child_appender --exact --ignored --nocapture --test-threads=1`
//! with `MXP_AUDIT_CRASH_CHILD=<store dir>` and `MXP_AUDIT_CRASH_SEED=<seed>`
//! in its environment. `child_appender` is `#[ignore]`d, so an ordinary run
//! skips it, and without `MXP_AUDIT_CRASH_CHILD` it returns at once (so
//! `--include-ignored` is harmless). It prints `open <next seq>` once the
//! log is open, then appends batches of 1 to 64 events forever, printing
//! `batch <start> <n>` before each batch and `durable <last seq of the
//! batch>` (flushed) after it returns. The `batch` lines let the parent
//! check that a batch lands whole or not at all.
//! Each event is derived from its sequence number alone ([`expected_event`])
//! so the parent can check every record's content.
//!
//! **The kill moment**: the parent waits for the k-th `durable` line (k
//! random, 0 to 8; 0 kills while the child starts, opens and recovers the
//! store), then waits a random 0 to 3 ms more, which only spreads the kill
//! over the next batch's write and flush (no sleep synchronises anything),
//! then kills. Every complete `durable` line the child wrote before it died
//! is acknowledged, including those read after the kill.
//!
//! **Reproducing**: the seed is printed at the start and in every failure;
//! `MXP_AUDIT_CRASH_SEED=<seed>` replays the same kill plan (the timing of
//! a kill against the child's I/O is not reproducible; the plan is), and
//! `MXP_AUDIT_CRASH_ROUNDS=<n>` runs more rounds than the default 100.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mxp_actors::store::{AuditLog, Store};
use mxp_governance::audit::{
    AuditEvent, EventData, EventKind, Hash, PolicyEffect, RecordedOutput, ToolOutcome,
};

const CHILD_ENV: &str = "MXP_AUDIT_CRASH_CHILD";
const SEED_ENV: &str = "MXP_AUDIT_CRASH_SEED";
const ROUNDS_ENV: &str = "MXP_AUDIT_CRASH_ROUNDS";
const ROUNDS: u64 = 100;
/// The child stops (and the parent fails) past this many records: a guard
/// against filling the disk if something goes wrong.
const MAX_RECORDS: u64 = 5_000_000;
/// How long the parent waits for one line of the child before failing.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// xorshift64*: small, seeded, good enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never zero (xorshift's fixed point); spread close seeds apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The event with sequence number `seq`, as the child appends it and as
/// the parent expects to read it back (kinds, sizes and fields vary with
/// `seq`, so records have different shapes and lengths).
fn expected_event(seq: u64) -> AuditEvent {
    let kind = match seq % 5 {
        0 => EventKind::ToolExecution {
            outcome: ToolOutcome::Landed,
            output: RecordedOutput::Recorded(
                (0..seq % 700).map(|i| (i ^ seq) as u8).collect::<Vec<u8>>(),
            ),
        },
        1 => EventKind::PolicyDecision {
            effect: PolicyEffect::Allow,
            policy_ids: (0..seq % 4).map(|i| format!("policy-{i}")).collect(),
        },
        2 => EventKind::KillSwitch {
            engaged: seq.is_multiple_of(2),
        },
        3 => EventKind::TokenMint,
        _ => EventKind::NodeConfig {
            digest: [(seq % 251) as u8; 32],
        },
    };
    let data = EventData::from_value(&serde_json::json!({
        "seq": seq,
        "pad": "p".repeat((seq % 97) as usize),
    }))
    .unwrap();
    let mut event = AuditEvent::new(1_700_000_000_000 + seq, kind, data)
        .with_trace(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .with_session(format!("s-{}", seq % 7).parse().unwrap());
    event.seq = seq;
    event
}

/// The child: see the module documentation.
#[test]
#[ignore = "the crash test's child process, run by the parent with MXP_AUDIT_CRASH_CHILD set"]
fn child_appender() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let mut rng = Rng::new(seed);
    let store = Store::open(Path::new(&dir)).unwrap();
    let mut log = AuditLog::open(store).unwrap();
    let mut out = std::io::stdout().lock();
    let report = |out: &mut std::io::StdoutLock<'_>, line: String| {
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    };
    if !report(&mut out, format!("open {}", log.head().next_seq)) {
        return;
    }
    // The parent gone (the pipe closed) ends the child at its next report.
    while log.head().next_seq < MAX_RECORDS {
        let start = log.head().next_seq;
        let n = 1 + rng.below(64);
        // Announced before the write, so the parent knows every batch
        // boundary and can check that a batch lands whole or not at all.
        if !report(&mut out, format!("batch {start} {n}")) {
            return;
        }
        let seqs = log
            .append_batch((start..start + n).map(expected_event).collect())
            .unwrap();
        assert_eq!(seqs, (start..start + n).collect::<Vec<_>>());
        if !report(&mut out, format!("durable {}", start + n - 1)) {
            return;
        }
    }
}

/// What one killed child reported.
#[derive(Debug, Default)]
struct Reports {
    /// The `next_seq` it opened the log at, if it got that far.
    opened_at: Option<u64>,
    /// How long after the spawn the `open` line came (when it came before the kill).
    open_after: Option<Duration>,
    /// Its `durable` lines, in order.
    durable: Vec<u64>,
    /// The `next_seq` after each batch it announced (`batch <start> <n>`).
    batch_ends: Vec<u64>,
}

/// Runs one child on `dir`, kills it after `k` durable lines and `delay`,
/// and returns everything it reported.
fn run_child(dir: &Path, seed: u64, k: u64, delay: Duration, ctx: &str) -> Reports {
    let spawned = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_appender",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    // Reads to EOF, forwarding only complete lines (a line cut by the kill
    // was never written as a report).
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.ends_with(b"\n") => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if tx.send(text).is_err() {
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });

    let mut reports = Reports::default();
    let record = |line: &str, reports: &mut Reports| {
        // libtest prints `test child_appender ... ` without a newline just
        // before the test's own output: a report is what follows it.
        let line = line.rsplit_once(" ... ").map_or(line, |(_, report)| report);
        if let Some(n) = line.strip_prefix("open ") {
            reports.opened_at = Some(n.parse().unwrap());
        } else if let Some(n) = line.strip_prefix("durable ") {
            reports.durable.push(n.parse().unwrap());
        } else if let Some((start, n)) = line.strip_prefix("batch ").and_then(|b| b.split_once(' '))
        {
            let (start, n): (u64, u64) = (start.parse().unwrap(), n.parse().unwrap());
            reports.batch_ends.push(start + n);
        }
    };
    let mut died_early = false;
    while (reports.durable.len() as u64) < k {
        match rx.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => {
                record(&line, &mut reports);
                if reports.opened_at.is_some() && reports.open_after.is_none() {
                    reports.open_after = Some(spawned.elapsed());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                died_early = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("{ctx}: no line from the child in {LINE_TIMEOUT:?}");
            }
        }
    }
    if !died_early {
        std::thread::sleep(delay);
        // Child::kill sends SIGKILL on Unix.
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    for line in rx.try_iter() {
        record(&line, &mut reports);
    }
    let stderr = stderr_reader.join().unwrap();
    assert!(
        !died_early && status.signal() == Some(9),
        "{ctx}: the child was not killed by SIGKILL but ended by itself ({status}) after {} reports:\n{stderr}",
        reports.durable.len()
    );
    reports
}

/// Everything the parent knows across rounds.
#[derive(Debug, Default)]
struct Seen {
    /// The highest acknowledged sequence number, if any.
    acked: Option<u64>,
    /// The chain hash of every record seen after a reopen (they must never change).
    hashes: Vec<Hash>,
    kills: u64,
    reports: u64,
    killed_before_open: u64,
    killed_before_first_report: u64,
    /// Rounds whose kill came after a batch was durable but before it was reported.
    landed_unacked: u64,
    /// Rounds whose kill came during a batch's write, which then did not land.
    lost_in_flight: u64,
    child_time: Duration,
    check_time: Duration,
    /// Total time from spawn to `open` of the children that reported it in time, and their number.
    open_time: Duration,
    opens: u32,
}

/// Reopens the store after a kill and checks it against everything acknowledged.
fn check_store(dir: &Path, seen: &mut Seen, ctx: &str) {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("{ctx}: reopening: {e}"));
    let log = AuditLog::open(store).unwrap_or_else(|e| panic!("{ctx}: opening the log: {e}"));
    let range = log
        .verify_all()
        .unwrap_or_else(|e| panic!("{ctx}: the chain does not verify: {e}"));
    let next = log.head().next_seq;
    assert_eq!(range.end, log.head(), "{ctx}");
    assert!(range.tree.is_some(), "{ctx}: verified from genesis");
    if let Some(acked) = seen.acked {
        assert!(
            next > acked,
            "{ctx}: LOST acknowledged events: the log ends at seq {} but seq {acked} was reported durable",
            next as i128 - 1
        );
    }
    assert!(
        next >= seen.hashes.len() as u64,
        "{ctx}: the log shrank from {} to {next} records",
        seen.hashes.len()
    );
    let mut seq = 0u64;
    while seq < next {
        let page = log
            .read(seq, 4096)
            .unwrap_or_else(|e| panic!("{ctx}: reading from {seq}: {e}"));
        assert!(!page.is_empty(), "{ctx}: nothing read at {seq}");
        for record in page {
            assert_eq!(record.seq(), seq, "{ctx}");
            // A record seen before must keep its hash (which commits to its
            // content, checked when it was first seen); a new one must hold
            // exactly what the child wrote.
            match seen.hashes.get(seq as usize) {
                Some(h) => assert_eq!(h, record.hash(), "{ctx}: CORRUPT: record {seq} changed"),
                None => {
                    let want = expected_event(seq);
                    assert!(
                        record.event() == &want,
                        "{ctx}: CORRUPT: record {seq} is not what the child wrote:\n got {:?}\nwant {want:?}",
                        record.event()
                    );
                    seen.hashes.push(*record.hash());
                }
            }
            seq += 1;
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    let seed = std::env::var(SEED_ENV).map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().unwrap(),
    );
    let rounds = std::env::var(ROUNDS_ENV).map_or(ROUNDS, |s| s.parse().unwrap());
    eprintln!("audit_crash: seed {seed} ({SEED_ENV}={seed} replays the plan), {rounds} rounds");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut seen = Seen::default();
    let started = Instant::now();
    for round in 0..rounds {
        let ctx = format!("seed {seed} round {round}");
        let k = rng.below(9);
        let delay = if k == 0 {
            // Anywhere from the exec to a little after the log opened (1.5
            // times the mean time the children took to open it).
            let mean_open = seen
                .open_time
                .checked_div(seen.opens)
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_millis(30));
            mean_open.mul_f64(1.5 * rng.below(1_001) as f64 / 1_000.0)
        } else {
            Duration::from_micros(rng.below(3_001))
        };
        let child_seed = rng.next();
        let t = Instant::now();
        let reports = run_child(&dir, child_seed, k, delay, &ctx);
        seen.child_time += t.elapsed();
        if let Some(d) = reports.open_after {
            seen.open_time += d;
            seen.opens += 1;
        }
        seen.kills += 1;
        seen.reports += reports.durable.len() as u64;
        match reports.opened_at {
            None => seen.killed_before_open += 1,
            Some(at) => assert_eq!(
                at,
                seen.hashes.len() as u64,
                "{ctx}: the child resumed at another seq than the parent last saw"
            ),
        }
        if reports.durable.is_empty() {
            seen.killed_before_first_report += 1;
        }
        for w in reports.durable.windows(2) {
            assert!(w[0] < w[1], "{ctx}: reports out of order: {w:?}");
        }
        if let Some(&last) = reports.durable.last() {
            seen.acked = Some(last);
        }
        let before = seen.hashes.len() as u64;
        let t = Instant::now();
        check_store(&dir, &mut seen, &ctx);
        seen.check_time += t.elapsed();
        // Atomic batches: the log ends where it started or at the end of
        // an announced batch, never inside one.
        let after = seen.hashes.len() as u64;
        assert!(
            after == before || reports.batch_ends.contains(&after),
            "{ctx}: TORN batch: the log ends at {after} records, inside a batch (started at {before}, batch ends {:?})",
            reports.batch_ends
        );
        let acked_end = reports.durable.last().map_or(before, |&last| last + 1);
        if after > acked_end {
            seen.landed_unacked += 1;
        } else if reports.batch_ends.last().is_some_and(|&end| end > after) {
            seen.lost_in_flight += 1;
        }
    }
    eprintln!(
        "audit_crash: seed {seed}: {rounds} rounds, {} SIGKILLs ({} before the log opened, {} before a batch was reported; {} with the batch in flight lost, {} with it landed unreported), {} durable reports, {} acknowledged events, {} records in the log, all verified, in {:?} ({:?} running children, {:?} checking; children opened the log {:?} after spawn on average)",
        seen.kills,
        seen.killed_before_open,
        seen.killed_before_first_report,
        seen.lost_in_flight,
        seen.landed_unacked,
        seen.reports,
        seen.acked.map_or(0, |a| a + 1),
        seen.hashes.len(),
        started.elapsed(),
        seen.child_time,
        seen.check_time,
        seen.open_time.checked_div(seen.opens).unwrap_or_default(),
    );
    assert!(seen.kills >= 100 || rounds < 100);
}
