//! Runs every fuzz target's body over its seed corpus, on stable Rust.
//!
//! The bodies live in `fuzz/src/lib.rs` (the cargo-fuzz crate, outside this
//! workspace) as plain functions; this test includes that file as a module and
//! feeds each body every file of `fuzz/corpus/<target>/`. It also checks that
//! the targets listed in `bodies::TARGETS`, the `[[bin]]` entries of
//! `fuzz/Cargo.toml`, the wrappers in `fuzz/fuzz_targets/` and the corpus
//! folders name the same set, so a new target cannot be left unrun.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs, unreachable_pub)]

#[path = "../../fuzz/src/lib.rs"]
mod bodies;

use std::collections::BTreeSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use mxp_protocol::{
    Ack, AgentRegister, Call, DiscoverRequest, ErrorPayload, EventBody, Flags, Frame, Heartbeat,
    Response, StreamChunk, StreamClose, StreamOpen, TypedPayload,
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn target_names() -> BTreeSet<String> {
    bodies::TARGETS
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

/// The `name` of every `[[bin]]` table in fuzz/Cargo.toml.
fn cargo_bins() -> BTreeSet<String> {
    let toml = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("read fuzz/Cargo.toml");
    let mut bins = BTreeSet::new();
    let mut in_bin = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().trim_start_matches('=').trim();
            bins.insert(value.trim_matches('"').to_owned());
        }
    }
    bins
}

/// File stems (or folder names) directly under `dir`.
fn entries(dir: &Path, want_dirs: bool) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir() == want_dirs)
        .map(|p| {
            let name = if want_dirs {
                p.file_name()
            } else {
                p.file_stem()
            };
            name.expect("a name").to_string_lossy().into_owned()
        })
        .collect()
}

/// The files of one corpus folder, sorted, with their contents.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    assert!(dir.is_dir(), "missing corpus folder {}", dir.display());
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, fs::read(&p).expect("read seed"))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus folder {} is empty",
        dir.display()
    );
    files
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_target_is_declared_wrapped_and_seeded() {
    let targets = target_names();
    assert_eq!(
        targets.len(),
        bodies::TARGETS.len(),
        "duplicate target names"
    );
    assert_eq!(cargo_bins(), targets, "[[bin]] entries of fuzz/Cargo.toml");
    let fuzz = fuzz_dir();
    assert_eq!(
        entries(&fuzz.join("fuzz_targets"), false),
        targets,
        "files in fuzz/fuzz_targets/"
    );
    assert_eq!(
        entries(&fuzz.join("corpus"), true),
        targets,
        "folders in fuzz/corpus/"
    );
    for name in &targets {
        let wrapper = fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{name}.rs")))
            .expect("read wrapper");
        assert!(
            wrapper.contains(&format!("mxp_fuzz::{name}(data)")),
            "fuzz_targets/{name}.rs does not call mxp_fuzz::{name}"
        );
    }
}

#[test]
fn every_target_body_holds_on_its_whole_corpus() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for (name, body) in bodies::TARGETS {
        for (file, data) in corpus(name) {
            runs += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(&data))) {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{name}/{file} ({}): {msg}", hex(&data)));
            }
        }
    }
    assert!(runs >= bodies::TARGETS.len());
    assert!(
        failures.is_empty(),
        "{} seeds fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn accepts<T: TypedPayload>(data: &[u8]) -> bool {
    T::decode(&Bytes::copy_from_slice(data)).is_ok()
}

/// Whether the crate accepts a seed whose name says it is valid.
fn decodes_as_valid(target: &str, data: &[u8]) -> Option<bool> {
    let b = Bytes::copy_from_slice(data);
    Some(match target {
        "agent_register" => accepts::<AgentRegister>(data),
        "call" => Call::decode(&b).and_then(|c| c.parse_body()).is_ok(),
        "response" => Response::decode(&b).and_then(|r| r.parse_body()).is_ok(),
        "error_payload" => ErrorPayload::decode(&b)
            .and_then(|e| e.parse_body())
            .is_ok(),
        "ack" => accepts::<Ack>(data),
        "stream_open" => accepts::<StreamOpen>(data),
        "stream_chunk" => accepts::<StreamChunk>(data),
        "stream_close" => StreamClose::decode(&b).and_then(|c| c.parse_body()).is_ok(),
        "json_payloads" => {
            accepts::<DiscoverRequest>(data)
                || accepts::<Heartbeat>(data)
                || accepts::<EventBody>(data)
                || Response::decode(&[&[0; 8], data].concat().into())
                    .and_then(|r| r.parse_body())
                    .is_ok()
        }
        _ => return None,
    })
}

/// Seed names carry a promise the corpus keeps: `ok-`/`err-` frames are the
/// conformance vectors' verdicts, `valid-` payloads decode.
#[test]
fn seed_names_match_the_crate_verdicts() {
    for (file, data) in corpus("frame_parse") {
        let ok = Frame::parse(Bytes::from(data.clone())).is_ok();
        if file.starts_with("ok-") {
            assert!(ok, "frame_parse/{file} should parse");
        } else {
            assert!(
                file.starts_with("err-"),
                "frame_parse/{file}: name it ok- or err-"
            );
            assert!(!ok, "frame_parse/{file} should fail");
        }
    }
    for (target, _) in bodies::TARGETS {
        for (file, data) in corpus(target) {
            if file.starts_with("valid-") {
                let verdict = decodes_as_valid(target, &data);
                assert_eq!(
                    verdict,
                    Some(true),
                    "{target}/{file} ({}) should decode",
                    hex(&data)
                );
            }
        }
    }
}

fn seed(target: &str, file: &str) -> Bytes {
    let path = fuzz_dir().join("corpus").join(target).join(file);
    Bytes::from(fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// Every open issue in `bodies::known_issues` still reproduces with its seed;
/// once the crate is fixed this fails, to have the tolerance removed.
#[test]
fn known_issues_still_reproduce() {
    use bodies::known_issues::{JSON_ARRAYS_ACCEPTED, JSON_FLOATS_INEXACT};

    let floats = seed("json_payloads", "known-issue-float-round-trip");
    let event = EventBody::decode(&floats).expect("the seed decodes");
    let frame = event.to_frame(1, 1, Flags::EMPTY).unwrap();
    let again = EventBody::decode(&frame.payload()).unwrap();
    assert_eq!(
        again != event,
        JSON_FLOATS_INEXACT,
        "JSON floats now round-trip: set known_issues::JSON_FLOATS_INEXACT to false"
    );

    let array = seed("json_payloads", "known-issue-array-body");
    let call = Call {
        target: mxp_protocol::AgentId::from_bytes([0; 16]),
        timeout_secs: 0,
        body: array.clone(),
    };
    let accepted = DiscoverRequest::decode(&array).is_ok() || call.parse_body().is_ok();
    assert_eq!(
        accepted, JSON_ARRAYS_ACCEPTED,
        "JSON arrays are now refused: set known_issues::JSON_ARRAYS_ACCEPTED to false"
    );
}
