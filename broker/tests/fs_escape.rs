//! The attack suite of the jailed file operations: hostile paths, symlinks
//! out of the root, a symlink swap race, FIFOs and devices, against real
//! files in a temp dir with canary files outside the root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, SystemTime};

use mxp_broker::fs::{FsError, FsLimits, FsRoot, Kind, path};

const SECRET: &[u8] = b"CANARY-SECRET-9f4c1e-do-not-leak";
const PASSWD: &[u8] = b"root:x:0:0:CANARY-PASSWD-77ab:/root:/bin/sh\n";
const OUTSIDE_ONLY_NAME: &str = "ONLY-OUTSIDE-MARKER-3d2a";
const WRITTEN: &[u8] = b"WRITTEN-BY-THE-ATTACK-SUITE";

/// A temp dir holding `root/` (the jail) and, beside it, `outside/` and a
/// `passwd` canary.
struct Layout {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
    passwd: PathBuf,
}

fn layout() -> Layout {
    layout_in(tempfile::tempdir().unwrap())
}

/// The layout in memory (tmpfs) where there is one: the hostile suite
/// does thousands of fsynced writes, which a loaded disk makes slow; the
/// jail's behaviour does not depend on the file system.
fn layout_in_memory() -> Layout {
    let shm = Path::new("/dev/shm");
    match shm.is_dir().then(|| tempfile::tempdir_in(shm)) {
        Some(Ok(tmp)) => layout_in(tmp),
        _ => layout(),
    }
}

fn layout_in(tmp: tempfile::TempDir) -> Layout {
    let base = fs::canonicalize(tmp.path()).unwrap();
    let root = base.join("root");
    let outside = base.join("outside");
    let passwd = base.join("passwd");
    fs::create_dir_all(outside.join("nested")).unwrap();
    fs::write(outside.join("secret.txt"), SECRET).unwrap();
    fs::write(outside.join("file"), SECRET).unwrap();
    fs::write(outside.join(OUTSIDE_ONLY_NAME), SECRET).unwrap();
    fs::write(outside.join("nested/deep.txt"), SECRET).unwrap();
    fs::write(&passwd, PASSWD).unwrap();

    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("ok.txt"), b"inside").unwrap();
    fs::write(root.join("sub/file"), b"inside sub").unwrap();
    let r = |name: &str| root.join(name);
    symlink("../outside", r("to_outside_dir")).unwrap();
    symlink(&outside, r("to_outside_abs")).unwrap();
    symlink("../outside/secret.txt", r("to_secret")).unwrap();
    symlink(outside.join("secret.txt"), r("to_secret_abs")).unwrap();
    symlink(&passwd, r("to_passwd_abs")).unwrap();
    symlink("/", r("to_slash")).unwrap();
    symlink("..", r("to_parent")).unwrap();
    symlink(".", r("to_self")).unwrap();
    symlink("chain2", r("chain1")).unwrap();
    symlink("chain3", r("chain2")).unwrap();
    symlink("../outside", r("chain3")).unwrap();
    symlink("loop2", r("loop1")).unwrap();
    symlink("loop1", r("loop2")).unwrap();
    symlink("/dev/zero", r("to_dev_zero")).unwrap();
    symlink("/dev/null", r("to_dev_null")).unwrap();
    symlink("sub", r("to_inner")).unwrap();
    symlink("../../outside", r("sub/up")).unwrap();
    symlink("to_self/to_parent", r("self_then_parent")).unwrap();
    Layout {
        _tmp: tmp,
        base,
        root,
        outside,
        passwd,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>, SystemTime),
    Dir,
    Link(PathBuf),
}

/// Everything under `base` except `root/`: path, content and mtime.
fn snapshot_outside(base: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p == base.join("root") {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let node = if m.file_type().is_symlink() {
                Node::Link(fs::read_link(&p).unwrap())
            } else if m.is_dir() {
                stack.push(p.clone());
                Node::Dir
            } else {
                Node::File(fs::read(&p).unwrap(), m.modified().unwrap())
            };
            out.insert(p, node);
        }
    }
    out
}

/// Temp files left anywhere under `dir`.
fn leftover_temps(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            }
            if e.file_name().to_string_lossy().starts_with(".mxp-tmp-") {
                out.push(e.path());
            }
        }
    }
    out
}

/// The ≥1,000 hostile inputs, generated deterministically.
fn hostile_paths(l: &Layout) -> Vec<String> {
    let outside = l.outside.to_string_lossy().into_owned();
    let passwd = l.passwd.to_string_lossy().into_owned();
    let prefixes = [
        "",
        "./",
        "sub/",
        "./sub/",
        "//",
        "sub//",
        "to_inner/",
        "to_self/",
    ];
    let ups: Vec<String> = [
        "..",
        "../",
        "./../",
        "..%2f",
        "%2e%2e%2f",
        "%2e%2e/",
        "..\\",
        ".\u{0}/",
        "\u{ff0e}\u{ff0e}/",
        "\u{2025}/",
        "..\u{2215}",
        "/",
        "//",
        "to_parent/",
        "self_then_parent/",
        "sub/up/../",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("{outside}/"), format!("/{outside}/")])
    .collect();
    let targets = [
        "outside/secret.txt",
        "secret.txt",
        "passwd",
        "etc/passwd",
        "outside",
        "outside/nested/deep.txt",
        "to_outside_dir/secret.txt",
        "to_outside_dir",
        "to_outside_abs/nested/deep.txt",
        "to_secret",
        "to_secret_abs",
        "to_passwd_abs",
        "to_slash/etc/passwd",
        "to_parent/outside/secret.txt",
        "chain1/secret.txt",
        "chain1",
        "loop1",
        "loop1/x",
        "to_dev_zero",
        "to_dev_null",
        "sub/up/secret.txt",
        "sub/up",
        "self_then_parent/outside/secret.txt",
    ];
    let mut out = Vec::new();
    for prefix in prefixes {
        for up in &ups {
            for target in targets {
                for reps in 1..=2 {
                    out.push(format!("{prefix}{}{target}", up.repeat(reps)));
                }
            }
        }
    }
    // Absolute canaries, bare and dressed up.
    for p in [&outside, &passwd] {
        out.push(p.clone());
        out.push(format!("{p}/"));
        out.push(format!("/{p}"));
        out.push(format!(".{p}"));
        out.push(format!("sub/../..{p}"));
    }
    out.push("/etc/passwd".into());
    out.push("/dev/zero".into());
    out.push("../".repeat(2000) + "etc/passwd");
    out.push("a/".repeat(3000));
    out.push("x".repeat(300));
    out.push(format!("{}/../outside/secret.txt", "to_inner/".repeat(200)));
    out
}

/// Every refusal must be a named variant; a bare `Io` would mean an
/// attack reached an unexpected syscall failure.
fn assert_named(op: &str, input: &str, e: &FsError) {
    assert!(
        !matches!(e, FsError::Io { .. } | FsError::OpenRoot { .. }),
        "{op} {input:?} failed unnamed: {e}"
    );
    let msg = e.to_string();
    assert!(!msg.is_empty());
}

/// A successful stat or list must be of a place whose real parent is
/// inside the root.
fn resolves_inside(l: &Layout, input: &str) -> bool {
    let rel = path::check(input, 4096).unwrap();
    let host = l.root.join(rel.to_path());
    let parent = match rel.split_last() {
        None => host,
        Some((p, _)) => l.root.join(p),
    };
    fs::canonicalize(parent).unwrap().starts_with(&l.root)
}

#[test]
fn a_thousand_hostile_paths_never_leave_the_root() {
    let l = layout_in_memory();
    let before = snapshot_outside(&l.base);
    let inputs = hostile_paths(&l);
    assert!(inputs.len() >= 1000, "only {} inputs", inputs.len());
    let jail = FsRoot::open(&l.root, FsLimits::default()).unwrap();
    let mut refused = 0usize;
    for input in &inputs {
        match jail.read(input) {
            Ok(bytes) => {
                assert!(!contains(&bytes, b"CANARY"), "read {input:?} leaked");
            }
            Err(e) => {
                assert_named("read", input, &e);
                refused += 1;
            }
        }
        match jail.list(input) {
            Ok(listing) => {
                assert!(resolves_inside(&l, input), "list {input:?} left the root");
                for entry in &listing.entries {
                    assert_ne!(entry.name, OUTSIDE_ONLY_NAME, "list {input:?} leaked");
                }
            }
            Err(e) => assert_named("list", input, &e),
        }
        match jail.stat(input) {
            Ok(_) => assert!(resolves_inside(&l, input), "stat {input:?} left the root"),
            Err(e) => assert_named("stat", input, &e),
        }
    }
    // Writes last: a write may replace an in-root symlink with a file,
    // which would take that symlink out of the later reads.
    for input in &inputs {
        match jail.write(input, WRITTEN) {
            Ok(_) => assert!(resolves_inside(&l, input), "write {input:?} left the root"),
            Err(e) => assert_named("write", input, &e),
        }
    }
    assert!(refused > inputs.len() / 2, "only {refused} reads refused");
    assert_eq!(snapshot_outside(&l.base), before, "the outside changed");
    assert!(leftover_temps(&l.root).is_empty());
    // The root layout still works for honest use afterwards.
    assert_eq!(jail.read("ok.txt").unwrap(), b"inside");
}

#[test]
fn each_symlink_escape_is_refused_by_name() {
    let l = layout();
    let jail = FsRoot::open(&l.root, FsLimits::default()).unwrap();
    for p in [
        "to_secret",
        "to_secret_abs",
        "to_passwd_abs",
        "to_outside_dir/secret.txt",
        "to_outside_abs/secret.txt",
        "to_slash/etc/passwd",
        "to_parent/outside/secret.txt",
        "chain1/secret.txt",
        "sub/up/secret.txt",
        "to_dev_zero",
        "to_dev_null",
        "self_then_parent/outside/secret.txt",
    ] {
        assert!(
            matches!(jail.read(p), Err(FsError::EscapesRoot { .. })),
            "read {p}: {:?}",
            jail.read(p)
        );
    }
    for p in [
        "to_outside_dir",
        "chain1",
        "to_parent",
        "sub/up",
        "to_slash",
    ] {
        assert!(
            matches!(jail.list(p), Err(FsError::EscapesRoot { .. })),
            "list {p}"
        );
    }
    for p in [
        "to_outside_dir/new.txt",
        "chain1/new.txt",
        "to_slash/tmp/new.txt",
    ] {
        assert!(
            matches!(jail.write(p, WRITTEN), Err(FsError::EscapesRoot { .. })),
            "write {p}"
        );
    }
    assert!(matches!(
        jail.read("loop1"),
        Err(FsError::SymlinkLoop { .. })
    ));
    // In-root symlinks are followed.
    assert_eq!(jail.read("to_inner/file").unwrap(), b"inside sub");
    // The message names the given path, not the root's location.
    let msg = jail.read("to_secret").unwrap_err().to_string();
    assert!(msg.contains("to_secret"), "{msg}");
    assert!(!msg.contains(&*l.root.to_string_lossy()), "{msg}");
}

#[test]
fn stat_does_not_follow_a_final_symlink() {
    let l = layout();
    let jail = FsRoot::open(&l.root, FsLimits::default()).unwrap();
    let s = jail.stat("to_secret_abs").unwrap();
    assert_eq!(s.kind, Kind::Symlink);
    assert_ne!(s.size, u64::try_from(SECRET.len()).unwrap());
    let s = jail.stat("ok.txt").unwrap();
    assert_eq!((s.kind, s.size), (Kind::File, 6));
    assert!(s.modified_ms.is_some());
    assert!(!s.readonly);
    assert_eq!(jail.stat(".").unwrap().kind, Kind::Dir);
    assert!(matches!(
        jail.stat("to_outside_dir/secret.txt"),
        Err(FsError::EscapesRoot { .. })
    ));
    assert!(matches!(jail.stat("nope"), Err(FsError::NotFound { .. })));
}

#[test]
fn write_replaces_a_final_symlink_instead_of_writing_through_it() {
    let l = layout();
    let before = snapshot_outside(&l.base);
    let jail = FsRoot::open(&l.root, FsLimits::default()).unwrap();
    let receipt = jail.write("to_secret_abs", WRITTEN).unwrap();
    assert!(receipt.replaced);
    assert_eq!(receipt.bytes, u64::try_from(WRITTEN.len()).unwrap());
    let m = fs::symlink_metadata(l.root.join("to_secret_abs")).unwrap();
    assert!(m.is_file(), "the symlink was not replaced");
    assert_eq!(jail.read("to_secret_abs").unwrap(), WRITTEN);
    assert_eq!(snapshot_outside(&l.base), before);
}

#[test]
fn symlink_swap_race_never_reads_or_writes_outside() {
    let l = layout();
    let before = snapshot_outside(&l.base);
    let jail = FsRoot::open(&l.root, FsLimits::default()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let root = l.root.clone();
    let outside = l.outside.clone();
    let swapper = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut swaps = 0u32;
            while !done.load(Ordering::Relaxed) && swaps < 200_000 {
                let link = root.join("sub_link");
                if swaps.is_multiple_of(2) {
                    symlink("../outside", &link).unwrap();
                } else {
                    symlink(&outside, &link).unwrap();
                }
                fs::rename(root.join("sub"), root.join("sub_real")).unwrap();
                fs::rename(&link, root.join("sub")).unwrap();
                fs::rename(root.join("sub"), &link).unwrap();
                fs::remove_file(&link).unwrap();
                fs::rename(root.join("sub_real"), root.join("sub")).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let mut inside_reads = 0u32;
    let mut escapes = 0u32;
    // At least 3,000 rounds, and on (up to 20,000) until both a read
    // inside and a refused escape were seen, so the race is exercised.
    for i in 0..20_000u32 {
        if i >= 3000 && inside_reads > 0 && escapes > 0 {
            break;
        }
        match jail.read("sub/file") {
            Ok(bytes) => {
                assert!(!contains(&bytes, b"CANARY"), "race read leaked");
                inside_reads += 1;
            }
            Err(FsError::EscapesRoot { .. }) => escapes += 1,
            Err(FsError::NotFound { .. }) => {}
            Err(e) => panic!("race read failed unnamed: {e}"),
        }
        let content = format!("version {i}");
        match jail.write("sub/file", content.as_bytes()) {
            Ok(_) => {}
            Err(FsError::EscapesRoot { .. } | FsError::NotFound { .. }) => escapes += 1,
            Err(e) => panic!("race write failed unnamed: {e}"),
        }
    }
    done.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0);
    assert!(inside_reads > 0, "no read ever succeeded");
    assert!(escapes > 0, "the swap never took effect during the race");
    assert!(jail.read("sub/file").unwrap().starts_with(b"version "));
    eprintln!("race: {swaps} swaps, {inside_reads} inside reads, {escapes} escapes/absent refused");
    assert_eq!(
        snapshot_outside(&l.base),
        before,
        "the race changed the outside"
    );
    assert!(leftover_temps(&l.root).is_empty());
}

/// What a refused read's error must match.
type Expect = fn(&FsError) -> bool;

/// Runs `f` on a thread and waits for it at most 10 s, so a blocking open
/// fails the test instead of hanging it.
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the operation blocked past its deadline")
}

#[test]
fn fifos_sockets_devices_and_dirs_are_refused_without_blocking() {
    let l = layout();
    let status = std::process::Command::new("mkfifo")
        .arg(l.root.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    symlink("pipe", l.root.join("pipe_link")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(l.root.join("sock")).unwrap();
    let jail = Arc::new(FsRoot::open(&l.root, FsLimits::default()).unwrap());
    let cases: [(&str, Expect); 6] = [
        ("pipe", |e| {
            matches!(
                e,
                FsError::NotRegularFile {
                    kind: Kind::Fifo,
                    ..
                }
            )
        }),
        ("pipe_link", |e| {
            matches!(
                e,
                FsError::NotRegularFile {
                    kind: Kind::Fifo,
                    ..
                }
            )
        }),
        ("sock", |e| {
            matches!(
                e,
                FsError::NotRegularFile {
                    kind: Kind::Socket,
                    ..
                }
            )
        }),
        ("sub", |e| {
            matches!(
                e,
                FsError::NotRegularFile {
                    kind: Kind::Dir,
                    ..
                }
            )
        }),
        ("to_dev_zero", |e| matches!(e, FsError::EscapesRoot { .. })),
        ("to_dev_null", |e| matches!(e, FsError::EscapesRoot { .. })),
    ];
    for (p, expected) in cases {
        let j = Arc::clone(&jail);
        let got = within_deadline(move || j.read(p));
        match got {
            Err(e) => assert!(expected(&e), "read {p}: {e}"),
            Ok(_) => panic!("read {p} succeeded"),
        }
    }
    // Writing over a FIFO or socket is refused too, without opening it.
    for p in ["pipe", "sock", "sub"] {
        let j = Arc::clone(&jail);
        let got = within_deadline(move || j.write(p, b"x"));
        assert!(
            matches!(got, Err(FsError::NotRegularFile { .. })),
            "write {p}: {got:?}"
        );
    }
    assert!(l.root.join("pipe").exists());
}

#[test]
fn read_size_is_bounded() {
    let l = layout();
    let limits = FsLimits {
        max_read_bytes: 100,
        ..FsLimits::default()
    };
    fs::write(l.root.join("exact"), [7u8; 100]).unwrap();
    fs::write(l.root.join("over"), [7u8; 101]).unwrap();
    let jail = FsRoot::open(&l.root, limits).unwrap();
    assert_eq!(jail.read("exact").unwrap().len(), 100);
    assert!(matches!(
        jail.read("over"),
        Err(FsError::TooLarge { limit: 100, .. })
    ));
}

#[test]
fn write_size_limit_is_checked_before_touching_disk() {
    let l = layout();
    let limits = FsLimits {
        max_write_bytes: 10,
        ..FsLimits::default()
    };
    let jail = FsRoot::open(&l.root, limits).unwrap();
    let listing = |p: &Path| {
        let mut v: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing(&l.root);
    assert!(matches!(
        jail.write("big.txt", &[0u8; 11]),
        Err(FsError::TooLarge { limit: 10, .. })
    ));
    assert!(matches!(
        jail.write("ok.txt", &[0u8; 11]),
        Err(FsError::TooLarge { .. })
    ));
    assert_eq!(listing(&l.root), before);
    assert_eq!(fs::read(l.root.join("ok.txt")).unwrap(), b"inside");
    assert!(matches!(
        jail.write("sub/.mxp-tmp-0123", b"x"),
        Err(FsError::ReservedName { .. })
    ));
    jail.write("small.txt", &[1u8; 10]).unwrap();
    assert_eq!(fs::read(l.root.join("small.txt")).unwrap(), [1u8; 10]);
    assert!(matches!(
        jail.write("missing_dir/x", b"x"),
        Err(FsError::NotFound { .. })
    ));
    assert!(leftover_temps(&l.root).is_empty());
}

#[test]
fn a_concurrent_reader_never_sees_a_partial_write() {
    let l = layout();
    const LEN: usize = 128 * 1024;
    let jail = Arc::new(FsRoot::open(&l.root, FsLimits::default()).unwrap());
    jail.write("big.bin", &vec![b'a'; LEN]).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let jail = Arc::clone(&jail);
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut reads = 0u32;
            loop {
                let last = done.load(Ordering::Acquire);
                let bytes = jail.read("big.bin").unwrap();
                assert_eq!(bytes.len(), LEN, "a partial file was read");
                let first = bytes[0];
                assert!(bytes.iter().all(|b| *b == first), "a mixed file was read");
                reads += 1;
                if last {
                    return reads;
                }
            }
        })
    };
    for i in 0..60u8 {
        let fill = b'a' + i % 26;
        jail.write("big.bin", &vec![fill; LEN]).unwrap();
    }
    done.store(true, Ordering::Release);
    let reads = reader.join().unwrap();
    assert!(reads > 1);
    assert!(leftover_temps(&l.root).is_empty());
}

#[test]
fn temp_files_are_removed_when_the_rename_fails() {
    // A racer flips `target` between a file and a non-empty directory, so
    // some renames fail after the temp file was written; none may leave a
    // temp file behind.
    let l = layout();
    let jail = FsRoot::open(&l.root, FsLimits::default()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let root = l.root.clone();
    let flipper = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let target = root.join("target");
            let mut flips = 0u32;
            while !done.load(Ordering::Relaxed) && flips < 200_000 {
                let _ = fs::remove_file(&target);
                let _ = fs::create_dir(&target);
                let _ = fs::write(target.join("keep"), b"k");
                let _ = fs::remove_file(target.join("keep"));
                let _ = fs::remove_dir(&target);
                flips += 1;
            }
        })
    };
    let (mut failed, mut rename_failed) = (0u32, 0u32);
    // At least 2,000 writes, and on (up to 20,000) until one failed at
    // the rename, so the cleanup path is exercised.
    for i in 0..20_000u32 {
        if i >= 2000 && rename_failed > 0 {
            break;
        }
        match jail.write("target", b"content") {
            Ok(_) => {}
            Err(FsError::Io {
                op: "rename into", ..
            }) => rename_failed += 1,
            Err(_) => failed += 1,
        }
    }
    done.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    eprintln!("writes: {rename_failed} failed at the rename, {failed} refused earlier");
    assert!(rename_failed > 0, "no write failed at the rename");
    assert!(leftover_temps(&l.root).is_empty());
}

#[test]
fn list_is_bounded_and_says_so() {
    let l = layout();
    for i in 0..5 {
        fs::write(l.root.join(format!("sub/f{i}")), b"x").unwrap();
    }
    // sub holds file, up, f0..f4: 7 entries.
    let small = FsLimits {
        max_list_entries: 3,
        ..FsLimits::default()
    };
    let jail = FsRoot::open(&l.root, small).unwrap();
    let listing = jail.list("sub").unwrap();
    assert_eq!(listing.entries.len(), 3);
    assert!(listing.truncated);
    let jail = FsRoot::open(&l.root, FsLimits::default()).unwrap();
    let listing = jail.list("sub").unwrap();
    assert!(!listing.truncated);
    let names: Vec<_> = listing.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["f0", "f1", "f2", "f3", "f4", "file", "up"]);
    let up = listing.entries.iter().find(|e| e.name == "up").unwrap();
    assert_eq!(up.kind, Kind::Symlink);
    assert!(matches!(
        jail.list("ok.txt"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(
        jail.list(".")
            .unwrap()
            .entries
            .iter()
            .any(|e| e.name == "ok.txt")
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_fifo_swapped_in_after_the_check_never_blocks_a_read() {
    // A racer renames a FIFO and a regular file in turn onto `f`, so some
    // reads see a file at the first check and a FIFO at the open: the
    // non-blocking open and the fstat on the handle must catch them.
    let l = layout();
    let status = std::process::Command::new("mkfifo")
        .arg(l.root.join("fifo_src"))
        .status()
        .unwrap();
    assert!(status.success());
    fs::write(l.root.join("file_src"), b"plain").unwrap();
    let jail = Arc::new(FsRoot::open(&l.root, FsLimits::default()).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let root = l.root.clone();
    let racer = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let f = root.join("f");
            let mut swaps = 0u32;
            while !done.load(Ordering::Relaxed) && swaps < 200_000 {
                // Move one in, then back out under its own name.
                let (src, back) = if swaps.is_multiple_of(2) {
                    ("fifo_src", "fifo_src")
                } else {
                    ("file_src", "file_src")
                };
                fs::rename(root.join(src), &f).unwrap();
                fs::rename(&f, root.join(back)).unwrap();
                swaps += 1;
            }
        })
    };
    let reader = {
        let jail = Arc::clone(&jail);
        thread::spawn(move || {
            let (mut fifos, mut files) = (0u32, 0u32);
            for i in 0..50_000u32 {
                if i >= 3000 && fifos > 0 && files > 0 {
                    break;
                }
                match jail.read("f") {
                    Ok(bytes) => {
                        assert_eq!(bytes, b"plain");
                        files += 1;
                    }
                    Err(FsError::NotRegularFile {
                        kind: Kind::Fifo, ..
                    }) => fifos += 1,
                    Err(FsError::NotFound { .. }) => {}
                    Err(e) => panic!("read f failed unnamed: {e}"),
                }
            }
            (fifos, files)
        })
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(reader.join());
    });
    let got = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("a read blocked on the FIFO");
    done.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let (fifos, files) = got.unwrap();
    eprintln!("fifo race: {fifos} FIFO refusals, {files} file reads");
    assert!(fifos > 0 && files > 0);
}
