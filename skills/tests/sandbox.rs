//! The sandbox: limits, imports, the tool door and the ABI checks, with real wasm modules.

mod common;

use std::time::{Duration, Instant};

use common::{
    Dirs, PRELUDE, TestGate, default_limits, dirs, echo_wat, limits, pins, write_skill,
    write_skill_bytes,
};
use mxp_skills::abi::CODE_DENIED;
use mxp_skills::host::DenyAll;
use mxp_skills::supply;
use mxp_skills::{RunnerConfig, SkillError, SkillHost, SkillRunner};

/// Write, pin, verify and load one skill; returns the runner.
fn runner_with(
    d: &Dirs,
    name: &str,
    wat: &str,
    tools: &[&str],
    limits: &str,
) -> Result<SkillRunner, SkillError> {
    let hash = write_skill(&d.skills, name, wat, tools, limits);
    let skill = supply::load(&d.skills.join(name), &pins(&[(name, &hash)]), &d.quarantine)?;
    let mut runner = SkillRunner::new(RunnerConfig {
        max_instances: 4,
        max_memory_bytes: 16 << 20,
    })?;
    runner.load(skill)?;
    Ok(runner)
}

fn deny_all() -> Box<dyn SkillHost> {
    Box::new(DenyAll)
}

#[test]
fn echo_returns_its_input_and_reports_fuel() {
    let d = dirs();
    let runner = runner_with(&d, "echo", &echo_wat(), &[], &default_limits()).unwrap();
    let out = runner
        .invoke("echo", "run", b"hello skill", &mut deny_all())
        .unwrap();
    assert_eq!(out.bytes, b"hello skill");
    assert!(
        out.fuel_used > 0 && out.fuel_used < 10_000_000,
        "{}",
        out.fuel_used
    );
    assert_eq!(out.host_calls, 0);
    // Fuel is deterministic: the same call costs the same.
    let again = runner
        .invoke("echo", "run", b"hello skill", &mut deny_all())
        .unwrap();
    assert_eq!(again.fuel_used, out.fuel_used);
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let d = dirs();
    let wat = format!(
        r#"(module {PRELUDE} (func (export "run") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0)))"#
    );
    let runner = runner_with(&d, "spin", &wat, &[], &limits(20_000_000, 1 << 20, 16, 0)).unwrap();
    let started = Instant::now();
    let err = runner
        .invoke("spin", "run", b"", &mut deny_all())
        .unwrap_err();
    assert!(
        matches!(err, SkillError::OutOfFuel { fuel: 20_000_000 }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_memory_bomb_stops_at_the_cap() {
    let d = dirs();
    let wat = format!(
        r#"(module {PRELUDE} (func (export "run") (param i32 i32) (result i64)
            (loop $l (drop (memory.grow (i32.const 1))) (br $l)) (i64.const 0)))"#
    );
    let runner = runner_with(
        &d,
        "bomb",
        &wat,
        &[],
        &limits(1_000_000_000, 4 * 65536, 16, 0),
    )
    .unwrap();
    let err = runner
        .invoke("bomb", "run", b"", &mut deny_all())
        .unwrap_err();
    assert!(
        matches!(err, SkillError::MemoryCap { limit: 262_144 }),
        "{err}"
    );
}

#[test]
fn memory_grows_up_to_the_cap_exactly_and_no_further() {
    let d = dirs();
    // Grows to 4 pages (the cap), returns memory.size in pages as 4 bytes at 0.
    let wat = format!(
        r#"(module {PRELUDE} (func (export "run") (param i32 i32) (result i64)
            (drop (memory.grow (i32.const 3)))
            (i32.store (i32.const 0) (memory.size))
            (i64.const 4)))"#
    );
    let runner = runner_with(&d, "fill", &wat, &[], &limits(1_000_000, 4 * 65536, 16, 0)).unwrap();
    let out = runner.invoke("fill", "run", b"", &mut deny_all()).unwrap();
    assert_eq!(out.bytes, 4u32.to_le_bytes());
    // One page more than the cap, declared up front: refused at instantiation.
    let big = r#"(module (memory (export "memory") 5)
        (func (export "alloc") (param i32) (result i32) (i32.const 0))
        (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#;
    let runner = runner_with(&d, "big", big, &[], &limits(1_000_000, 4 * 65536, 16, 0)).unwrap();
    let err = runner
        .invoke("big", "run", b"", &mut deny_all())
        .unwrap_err();
    assert!(
        matches!(err, SkillError::MemoryCap { limit: 262_144 }),
        "{err}"
    );
}

#[test]
fn a_wasi_file_import_is_refused_at_load_naming_it() {
    let d = dirs();
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_read" (func (param i32 i32 i32 i32) (result i32)))
          {PRELUDE}
          (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#
    );
    let err = runner_with(&d, "reader", &wat, &[], &default_limits()).unwrap_err();
    match &err {
        SkillError::ForbiddenImport { module, name } => {
            assert_eq!(
                (module.as_str(), name.as_str()),
                ("wasi_snapshot_preview1", "path_open")
            );
        }
        other => panic!("expected ForbiddenImport, got {other}"),
    }
    assert!(
        err.to_string().contains("wasi_snapshot_preview1.path_open"),
        "{err}"
    );
    // Any other host module too, and a mistyped mxp.call_tool.
    let env = format!(r#"(module (import "env" "clock" (func (result i64))) {PRELUDE})"#);
    assert!(matches!(
        runner_with(&d, "clock", &env, &[], &default_limits()),
        Err(SkillError::ForbiddenImport { .. })
    ));
    let typo =
        format!(r#"(module (import "mxp" "call_tool" (func (param i32) (result i64))) {PRELUDE})"#);
    assert!(matches!(
        runner_with(&d, "typo", &typo, &[], &default_limits()),
        Err(SkillError::BadAbi { .. })
    ));
}

/// A skill that calls `fs.read` with args "/etc/passwd" and returns the i64 result as 8 bytes at 0.
fn reader_wat() -> String {
    format!(
        r#"(module
          (import "mxp" "call_tool" (func $call (param i32 i32 i32 i32) (result i64)))
          {PRELUDE}
          (data (i32.const 16) "fs.read")
          (data (i32.const 32) "/etc/passwd")
          (func (export "run") (param i32 i32) (result i64)
            (i64.store (i32.const 0) (call $call (i32.const 16) (i32.const 7) (i32.const 32) (i32.const 11)))
            (i64.const 8))
          (func (export "fetch") (param i32 i32) (result i64)
            (call $call (i32.const 16) (i32.const 7) (i32.const 32) (i32.const 11))))"#
    )
}

#[test]
fn a_tool_not_in_the_manifest_never_reaches_the_host() {
    let d = dirs();
    let runner = runner_with(&d, "reader", &reader_wat(), &[], &default_limits()).unwrap();
    let gate = TestGate::allowing(b"root:x:0:0");
    let mut host: Box<dyn SkillHost> = Box::new(gate.clone());
    let err = runner.invoke("reader", "run", b"", &mut host).unwrap_err();
    assert!(
        matches!(&err, SkillError::ToolNotInManifest { tool } if tool == "fs.read"),
        "{err}"
    );
    assert_eq!(gate.count(), 0);
}

#[test]
fn a_granted_tool_the_gate_denies_gives_the_skill_the_denied_code() {
    let d = dirs();
    let runner = runner_with(&d, "reader", &reader_wat(), &["fs.read"], &default_limits()).unwrap();
    let gate = TestGate::denying();
    let mut host: Box<dyn SkillHost> = Box::new(gate.clone());
    let out = runner.invoke("reader", "run", b"", &mut host).unwrap();
    assert_eq!(out.bytes, CODE_DENIED.to_le_bytes());
    assert_eq!(out.host_calls, 1);
    let calls = gate.calls.lock().unwrap().clone();
    assert_eq!(calls, vec![("fs.read".to_owned(), b"/etc/passwd".to_vec())]);
}

#[test]
fn a_granted_tool_result_is_copied_into_the_skill() {
    let d = dirs();
    let runner = runner_with(&d, "reader", &reader_wat(), &["fs.read"], &default_limits()).unwrap();
    let gate = TestGate::allowing(b"the file's text");
    let mut host: Box<dyn SkillHost> = Box::new(gate.clone());
    let out = runner.invoke("reader", "fetch", b"", &mut host).unwrap();
    assert_eq!(out.bytes, b"the file's text");
    assert_eq!(gate.count(), 1);
    // A result over max_output_bytes is refused, not copied.
    let d2 = dirs();
    let small = runner_with(
        &d2,
        "reader",
        &reader_wat(),
        &["fs.read"],
        &limits(10_000_000, 1 << 20, 4, 4),
    )
    .unwrap();
    let err = small.invoke("reader", "fetch", b"", &mut host).unwrap_err();
    assert!(
        matches!(err, SkillError::OutputTooLarge { len: 15, limit: 4 }),
        "{err}"
    );
}

#[test]
fn host_calls_past_the_limit_stop_the_skill() {
    let d = dirs();
    let wat = format!(
        r#"(module
          (import "mxp" "call_tool" (func $call (param i32 i32 i32 i32) (result i64)))
          {PRELUDE}
          (data (i32.const 16) "fs.read")
          (func (export "run") (param i32 i32) (result i64)
            (loop $l (drop (call $call (i32.const 16) (i32.const 7) (i32.const 0) (i32.const 0))) (br $l))
            (i64.const 0)))"#
    );
    let runner = runner_with(
        &d,
        "chatty",
        &wat,
        &["fs.read"],
        &limits(10_000_000, 1 << 20, 64, 3),
    )
    .unwrap();
    let gate = TestGate::allowing(b"x");
    let mut host: Box<dyn SkillHost> = Box::new(gate.clone());
    let err = runner.invoke("chatty", "run", b"", &mut host).unwrap_err();
    assert!(
        matches!(err, SkillError::HostCallsExceeded { limit: 3 }),
        "{err}"
    );
    assert_eq!(gate.count(), 3);
}

#[test]
fn the_host_is_handed_back_after_every_outcome() {
    let d = dirs();
    let runner = runner_with(&d, "reader", &reader_wat(), &[], &default_limits()).unwrap();
    let gate = TestGate::allowing(b"");
    let mut host: Box<dyn SkillHost> = Box::new(gate.clone());
    runner.invoke("reader", "run", b"", &mut host).unwrap_err();
    // The same gate is back: calling it records a call on the shared log.
    host.call_tool("probe", b"").unwrap();
    assert_eq!(gate.count(), 1);
}

#[test]
fn garbage_and_truncated_modules_are_bad_modules() {
    let d = dirs();
    let mut runner = SkillRunner::new(RunnerConfig {
        max_instances: 2,
        max_memory_bytes: 1 << 20,
    })
    .unwrap();
    let good = wat::parse_str(echo_wat()).unwrap();
    let half = good.get(..good.len() / 2).unwrap().to_vec();
    for (name, bytes) in [
        ("garbage", b"\0asm\x07\0\0\0garbage".to_vec()),
        ("half", half),
        ("empty", Vec::new()),
        ("text", echo_wat().into_bytes()),
    ] {
        let hash = write_skill_bytes(&d.skills, name, &bytes, &[], &default_limits());
        let skill =
            supply::load(&d.skills.join(name), &pins(&[(name, &hash)]), &d.quarantine).unwrap();
        let err = runner.load(skill).unwrap_err();
        assert!(matches!(err, SkillError::BadModule { .. }), "{name}: {err}");
    }
}

#[test]
fn abi_violations_are_named() {
    let d = dirs();
    let run = |name: &str, body: &str| {
        let wat = format!(
            r#"(module {PRELUDE} (func (export "run") (param i32 i32) (result i64) {body}))"#
        );
        let runner = runner_with(&d, name, &wat, &["fs.read"], &default_limits()).unwrap();
        runner
            .invoke(name, "run", b"in", &mut deny_all())
            .unwrap_err()
    };
    // Output pointer past the end of memory (ptr 65536, len 1).
    let err = run("oob", "(i64.const 0x0001000000000001)");
    assert!(matches!(err, SkillError::BadAbi { .. }), "{err}");
    // Output length past the cap.
    let err = run("long", "(i64.const 65537)");
    assert!(
        matches!(err, SkillError::OutputTooLarge { len: 65537, .. }),
        "{err}"
    );
    // A negative result is the skill's own failure code.
    let err = run("fails", "(i64.const -7)");
    assert!(matches!(err, SkillError::SkillFailed { code: -7 }), "{err}");
    // A trap is a trap.
    let err = run("trap", "unreachable");
    assert!(matches!(err, SkillError::Trap { .. }), "{err}");

    // alloc answering a pointer outside memory.
    let bad_alloc = r#"(module (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) (i32.const -16))
        (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#;
    let runner = runner_with(&d, "badalloc", bad_alloc, &[], &default_limits()).unwrap();
    let err = runner
        .invoke("badalloc", "run", b"input", &mut deny_all())
        .unwrap_err();
    assert!(matches!(err, SkillError::BadAbi { .. }), "{err}");

    // call_tool with a name pointer outside memory: stopped before the manifest or host.
    let wat = format!(
        r#"(module (import "mxp" "call_tool" (func $call (param i32 i32 i32 i32) (result i64))) {PRELUDE}
          (func (export "run") (param i32 i32) (result i64)
            (call $call (i32.const 65530) (i32.const 100) (i32.const 0) (i32.const 0))))"#
    );
    let runner = runner_with(&d, "badname", &wat, &["fs.read"], &default_limits()).unwrap();
    let gate = TestGate::allowing(b"");
    let mut host: Box<dyn SkillHost> = Box::new(gate.clone());
    let err = runner.invoke("badname", "run", b"", &mut host).unwrap_err();
    assert!(matches!(err, SkillError::BadAbi { .. }), "{err}");
    assert_eq!(gate.count(), 0);

    // Missing exports: no alloc at load, no such entry point at invoke.
    let no_alloc = r#"(module (memory (export "memory") 1) (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#;
    assert!(matches!(
        runner_with(&d, "noalloc", no_alloc, &[], &default_limits()),
        Err(SkillError::BadAbi { .. })
    ));
    let runner = runner_with(&d, "echo", &echo_wat(), &[], &default_limits()).unwrap();
    let err = runner
        .invoke("echo", "nope", b"", &mut deny_all())
        .unwrap_err();
    assert!(matches!(err, SkillError::BadAbi { .. }), "{err}");
    let err = runner
        .invoke("other", "run", b"", &mut deny_all())
        .unwrap_err();
    assert!(matches!(err, SkillError::UnknownSkill { .. }), "{err}");
}

#[test]
fn a_manifest_memory_above_the_runner_is_refused_at_load() {
    let d = dirs();
    let hash = write_skill(
        &d.skills,
        "greedy",
        &echo_wat(),
        &[],
        &limits(1000, 32 << 20, 16, 0),
    );
    let skill = supply::load(
        &d.skills.join("greedy"),
        &pins(&[("greedy", &hash)]),
        &d.quarantine,
    )
    .unwrap();
    let mut runner = SkillRunner::new(RunnerConfig {
        max_instances: 2,
        max_memory_bytes: 16 << 20,
    })
    .unwrap();
    let err = runner.load(skill).unwrap_err();
    assert!(
        matches!(
            err,
            SkillError::MemoryAboveRunner {
                limit: 33_554_432,
                runner: 16_777_216
            }
        ),
        "{err}"
    );
}

/// What the inner invocation of [`Reentrant`] gave: output, or the Engine error's reason.
type Seen = std::sync::Arc<std::sync::Mutex<Option<Result<Vec<u8>, String>>>>;

/// A host that, during a tool call, tries to run another skill on the same runner.
struct Reentrant {
    runner: std::sync::Arc<std::sync::OnceLock<SkillRunner>>,
    seen: Seen,
}

impl SkillHost for Reentrant {
    fn call_tool(
        &mut self,
        _tool: &str,
        _args: &[u8],
    ) -> Result<Vec<u8>, mxp_skills::HostCallError> {
        let Some(runner) = self.runner.get() else {
            return Err(mxp_skills::HostCallError::Failed {
                tool: "fs.read".into(),
                reason: "no runner".into(),
            });
        };
        let inner = runner.invoke("echo", "run", b"inner", &mut deny_all());
        let outcome = match inner {
            Ok(out) => Ok(out.bytes),
            Err(SkillError::Engine { reason }) => Err(reason),
            Err(other) => Err(format!("unexpected: {other}")),
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(outcome);
        }
        Ok(b"done".to_vec())
    }
}

#[test]
fn a_full_pool_refuses_another_instance_with_an_engine_error() {
    let d = dirs();
    let mut runner = SkillRunner::new(RunnerConfig {
        max_instances: 1,
        max_memory_bytes: 1 << 20,
    })
    .unwrap();
    for (name, wat, tools) in [
        ("reader", reader_wat(), &["fs.read"][..]),
        ("echo", echo_wat(), &[][..]),
    ] {
        let hash = write_skill(&d.skills, name, &wat, tools, &default_limits());
        runner
            .load(
                supply::load(&d.skills.join(name), &pins(&[(name, &hash)]), &d.quarantine).unwrap(),
            )
            .unwrap();
    }
    let cell = std::sync::Arc::new(std::sync::OnceLock::new());
    cell.set(runner).unwrap();
    let seen = std::sync::Arc::default();
    let mut host: Box<dyn SkillHost> = Box::new(Reentrant {
        runner: cell.clone(),
        seen: std::sync::Arc::clone(&seen),
    });
    let runner = cell.get().unwrap();
    let out = runner.invoke("reader", "fetch", b"", &mut host).unwrap();
    assert_eq!(out.bytes, b"done");
    let inner = seen.lock().unwrap().clone().expect("the host was called");
    assert!(
        inner.is_err(),
        "the single pool slot was taken, yet the inner skill ran: {inner:?}"
    );
    // With the outer skill finished the slot is free again.
    let out = runner
        .invoke("echo", "run", b"after", &mut deny_all())
        .unwrap();
    assert_eq!(out.bytes, b"after");
}
