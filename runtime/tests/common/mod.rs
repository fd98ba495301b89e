//! Shared by the broker, skills and `mxp skills` tests: real skill folders
//! built from WAT text, and child processes run with a deadline.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_mxp-node");
pub const MXP_BIN: &str = env!("CARGO_BIN_EXE_mxp");

/// The longest a child may run before the test fails (and kills it).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// memory + a bump allocator.
const PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
"#;

/// `run` answers with its input.
pub fn echo_wat() -> String {
    format!(
        r#"(module {PRELUDE}
          (func (export "run") (param $p i32) (param $l i32) (result i64)
            (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
                    (i64.extend_i32_u (local.get $l)))))"#
    )
}

/// `run` calls the tool `tool` with its input as the arguments, and answers
/// with the tool's result, or with the negative code the host gave.
pub fn call_wat(tool: &str) -> String {
    let len = tool.len();
    format!(
        r#"(module
          (import "mxp" "call_tool" (func $call (param i32 i32 i32 i32) (result i64)))
          {PRELUDE}
          (data (i32.const 16) "{tool}")
          (func (export "run") (param $p i32) (param $l i32) (result i64)
            (call $call (i32.const 16) (i32.const {len}) (local.get $p) (local.get $l))))"#
    )
}

/// Writes `<skills>/<name>/{skill.wasm, skill.toml}`; returns the module's SHA-256.
pub fn write_skill(skills: &Path, name: &str, wat: &str, tools: &[&str]) -> String {
    let bytes = wat::parse_str(wat).expect("test WAT assembles");
    let dir = skills.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("skill.wasm"), &bytes).unwrap();
    let hash = mxp_skills::supply::sha256_hex(&bytes);
    let tools = tools
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.join("skill.toml"),
        format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\nsha256 = \"{hash}\"\ntools = [{tools}]\n\
             [limits]\nfuel = 10000000\nmemory_bytes = 1048576\nmax_output_bytes = 65536\nmax_host_calls = 4\n"
        ),
    )
    .unwrap();
    hash
}

/// Appends a byte to a skill's module: it no longer matches its pin.
pub fn tamper(skills: &Path, name: &str) {
    let module = skills.join(name).join("skill.wasm");
    let mut bytes = std::fs::read(&module).unwrap();
    bytes.push(0);
    std::fs::write(&module, bytes).unwrap();
}

/// What a child process left behind.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` (stdout and stderr piped) to exit, reading both
/// streams; kills it and fails the test past [`DEADLINE`].
pub fn finish(mut child: Child, what: &str) -> Run {
    let (tx, rx) = mpsc::channel();
    let streams: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for (i, mut s) in streams.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            let _ = tx.send((i, text));
        });
    }
    let end = Instant::now() + DEADLINE;
    let mut texts = [String::new(), String::new()];
    for _ in 0..2 {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok((i, text)) => texts[i] = text,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} still running after {DEADLINE:?}");
            }
        }
    }
    let status = child.wait().unwrap();
    let [stdout, stderr] = texts;
    Run {
        code: status
            .code()
            .unwrap_or_else(|| panic!("{what} killed by a signal: {status}")),
        stdout,
        stderr,
    }
}

/// Runs `bin args...` in `cwd` with `env` (and no `MXP_` variables of this
/// process), to its end.
pub fn run(bin: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("MXP_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("MXP_CONFIG_DIR", cwd.join("cli-config"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(cmd.spawn().unwrap(), bin)
}

/// Lines of a child's stream, read on a thread: a test waits for the
/// line it needs, with a deadline, and sees every line on failure.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    pub fn read(stream: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line for which `want` holds, waiting up to [`DEADLINE`].
    pub fn wait(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| want(l)) {
            return l.clone();
        }
        let end = Instant::now() + DEADLINE;
        loop {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no line {what}; saw {:?}", self.seen),
            }
        }
    }

    /// The lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Every line up to the end of the stream (the child exited), waiting
    /// up to [`DEADLINE`] for it.
    pub fn rest(&mut self) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        loop {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("still open after {DEADLINE:?}; saw {:?}", self.seen)
                }
            }
        }
        std::mem::take(&mut self.seen)
    }
}

/// Makes `dir/policies` a policy folder: the default node and tool
/// policies (not the default approval rule) and `extra` as `test.cedar`.
pub fn policies(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("policies");
    std::fs::create_dir_all(&p).unwrap();
    let defaults = Path::new(env!("CARGO_MANIFEST_DIR")).join("../governance/policy/default");
    for f in ["node.cedar", "tools.cedar"] {
        std::fs::copy(defaults.join(f), p.join(f)).unwrap();
    }
    std::fs::write(p.join("test.cedar"), extra).unwrap();
    p
}
