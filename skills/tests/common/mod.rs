//! Shared helpers: real skill directories on disk, built from WAT text.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mxp_skills::supply::{self, Pins};
use mxp_skills::{HostCallError, SkillHost};

/// memory + a bump allocator + `run` echoing its input.
pub const PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
"#;

/// An echo skill.
pub fn echo_wat() -> String {
    format!(
        r#"(module {PRELUDE}
          (func (export "run") (param $p i32) (param $l i32) (result i64)
            (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
                    (i64.extend_i32_u (local.get $l)))))"#
    )
}

/// Limits as TOML lines.
pub fn limits(fuel: u64, memory: u64, output: u64, calls: u32) -> String {
    format!(
        "fuel = {fuel}\nmemory_bytes = {memory}\nmax_output_bytes = {output}\nmax_host_calls = {calls}\n"
    )
}

/// Default limits: 10M fuel, 1 MiB memory, 64 KiB output, 4 host calls.
pub fn default_limits() -> String {
    limits(10_000_000, 1 << 20, 65_536, 4)
}

/// Write `<skills>/<name>/{skill.wasm, skill.toml}` from `wat`; returns the pinned hash.
pub fn write_skill(skills: &Path, name: &str, wat: &str, tools: &[&str], limits: &str) -> String {
    let bytes = wat::parse_str(wat).expect("test WAT assembles");
    write_skill_bytes(skills, name, &bytes, tools, limits)
}

/// Like [`write_skill`] with raw module bytes.
pub fn write_skill_bytes(
    skills: &Path,
    name: &str,
    bytes: &[u8],
    tools: &[&str],
    limits: &str,
) -> String {
    let dir = skills.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(supply::MODULE_FILE), bytes).unwrap();
    let hash = supply::sha256_hex(bytes);
    let tools = tools
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let manifest = format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\nsha256 = \"{hash}\"\ntools = [{tools}]\n[limits]\n{limits}"
    );
    std::fs::write(dir.join(supply::MANIFEST_FILE), manifest).unwrap();
    hash
}

/// Pins for the given (name, hash) pairs.
pub fn pins(pairs: &[(&str, &str)]) -> Pins {
    pairs
        .iter()
        .map(|(n, h)| ((*n).to_owned(), (*h).to_owned()))
        .collect()
}

/// The paths of a test's skills and quarantine folders.
pub struct Dirs {
    pub root: tempfile::TempDir,
    pub skills: PathBuf,
    pub quarantine: PathBuf,
}

/// Fresh skills and quarantine folders.
pub fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let skills = root.path().join("skills");
    let quarantine = root.path().join("quarantine");
    std::fs::create_dir_all(&skills).unwrap();
    Dirs {
        root,
        skills,
        quarantine,
    }
}

/// The calls a test gate saw: (tool, args).
pub type CallLog = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in for the gate: records every call, answers with a fixed result.
#[derive(Clone)]
pub struct TestGate {
    pub calls: CallLog,
    pub answer: Result<Vec<u8>, HostCallError>,
}

impl TestGate {
    pub fn allowing(result: &[u8]) -> Self {
        Self {
            calls: Arc::default(),
            answer: Ok(result.to_vec()),
        }
    }

    pub fn denying() -> Self {
        Self {
            calls: Arc::default(),
            answer: Err(HostCallError::Denied {
                tool: "fs.read".into(),
                reason: "no grant".into(),
            }),
        }
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl SkillHost for TestGate {
    fn call_tool(&mut self, tool: &str, args: &[u8]) -> Result<Vec<u8>, HostCallError> {
        self.calls
            .lock()
            .unwrap()
            .push((tool.to_owned(), args.to_vec()));
        self.answer.clone()
    }
}
