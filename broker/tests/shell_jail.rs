//! `shell.exec` against real child processes in the real jail.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mxp_broker::shell::{
    ExitStatus, JailTools, ShellError, ShellJail, ShellLimits, ShellOutput, ShellRequest,
    ShellSettings,
};

/// The jails of this file run one at a time: the leftover-process checks
/// look at every process of the jail uid.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const JAIL_UID: u32 = 65534;

fn settings(allow: &[&str]) -> ShellSettings {
    ShellSettings {
        enabled: true,
        allow: allow.iter().map(PathBuf::from).collect(),
        limits: ShellLimits {
            timeout: Duration::from_secs(10),
            ..ShellLimits::default()
        },
        ..ShellSettings::default()
    }
}

fn req(program: &str, args: &[&str]) -> ShellRequest {
    ShellRequest {
        program: program.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..ShellRequest::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn sh(jail: &ShellJail, script: &str) -> Result<ShellOutput, ShellError> {
    jail.exec(&req("/bin/sh", &["-c", script])).await
}

fn am_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().nth(1));
    assert!(euid.is_some(), "no Uid: line in /proc/self/status");
    euid == Some("0")
}

/// Pids of live processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let proc_dir = std::fs::read_dir("/proc");
    assert!(proc_dir.is_ok(), "/proc cannot be listed");
    for entry in proc_dir.into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|r| r.split_whitespace().next().map(str::to_owned));
        if real.as_deref() == Some(&uid.to_string()) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (with a deadline) until no process of the jail uid is left.
async fn assert_no_jail_processes_left() {
    if !am_root() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_of(JAIL_UID);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of uid {JAIL_UID} left after the jail ended: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn shell_exec_is_disabled_by_default() {
    assert!(!ShellSettings::default().enabled);
    assert!(matches!(
        ShellJail::new(ShellSettings::default()),
        Err(ShellError::Disabled)
    ));
}

#[test]
fn missing_jail_tools_and_bad_allow_entries_are_named_at_start() {
    let mut s = settings(&["/bin/echo"]);
    s.tools = JailTools {
        unshare: "/nonexistent/unshare".into(),
        ..JailTools::default()
    };
    match ShellJail::new(s) {
        Err(e @ ShellError::JailUnavailable { .. }) => {
            assert!(e.to_string().contains("/nonexistent/unshare"), "{e}");
        }
        other => panic!("expected JailUnavailable, got {other:?}"),
    }
    for entry in ["bin/echo", "/nonexistent/prog", "/usr/bin"] {
        assert!(
            matches!(
                ShellJail::new(settings(&[entry])),
                Err(ShellError::BadAllowEntry { .. })
            ),
            "{entry}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowlisted_absolute_programs_run() {
    let _serial = SERIAL.lock().await;
    let jail = ShellJail::new(settings(&["/bin/echo"])).unwrap();
    // /bin is a symlink to usr/bin here: the configured path and its
    // canonical form both name the one allowed file.
    let ok = jail.exec(&req("/bin/echo", &["hi"])).await.unwrap();
    assert_eq!(ok.status, ExitStatus::Exit { code: 0 });
    assert_eq!(text(&ok.stdout), "hi\n");
    for program in ["/bin/sh", "/bin/bash", "/usr/bin/env", "/bin/../bin/echo"] {
        assert!(
            matches!(
                jail.exec(&req(program, &[])).await,
                Err(ShellError::ProgramNotAllowed { .. })
            ),
            "{program}"
        );
    }
    for program in ["echo", "./echo", "bin/echo"] {
        assert!(
            matches!(
                jail.exec(&req(program, &[])).await,
                Err(ShellError::RelativeProgram { .. })
            ),
            "{program}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_are_passed_literally() {
    let _serial = SERIAL.lock().await;
    let jail = ShellJail::new(settings(&["/bin/echo"])).unwrap();
    let args = [
        "$(id)", ";", "id", "|", "`id`", "&&", "$HOME", "*", "> /tmp/x",
    ];
    let out = jail.exec(&req("/bin/echo", &args)).await.unwrap();
    assert_eq!(out.status, ExitStatus::Exit { code: 0 });
    assert_eq!(text(&out.stdout), format!("{}\n", args.join(" ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_empty_unless_granted() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/usr/bin/env"]);
    s.env = BTreeMap::from([
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("GREETING".to_owned(), "hello there".to_owned()),
    ]);
    let jail = ShellJail::new(s).unwrap();
    let none = jail.exec(&req("/usr/bin/env", &[])).await.unwrap();
    assert_eq!(none.status, ExitStatus::Exit { code: 0 });
    assert_eq!(text(&none.stdout), "", "the node's environment leaked");

    let mut one = req("/usr/bin/env", &[]);
    one.env = vec!["GREETING".to_owned()];
    let out = jail.exec(&one).await.unwrap();
    assert_eq!(text(&out.stdout), "GREETING=hello there\n");

    one.env = vec!["PATH".to_owned()];
    assert!(matches!(
        jail.exec(&one).await,
        Err(ShellError::EnvNotGranted { name }) if name == "PATH"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jail_has_no_network() {
    let _serial = SERIAL.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let jail = ShellJail::new(settings(&["/bin/bash", "/bin/cat"])).unwrap();

    let dev = jail
        .exec(&req("/bin/cat", &["/proc/net/dev"]))
        .await
        .unwrap();
    let interfaces: Vec<String> = text(&dev.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .collect();
    assert_eq!(interfaces, ["lo"]);

    let script = format!("echo x > /dev/tcp/127.0.0.1/{port} && echo connected");
    let out = jail
        .exec(&req("/bin/bash", &["-c", &script]))
        .await
        .unwrap();
    assert_ne!(out.status, ExitStatus::Exit { code: 0 });
    assert!(!text(&out.stdout).contains("connected"));
    // The run has ended: a connection it made would be queued by now.
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the jail reached the host's loopback: {other:?}"),
    }
    // The listener does accept a connection from outside the jail.
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the control connection was not accepted: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jail_has_its_own_pids_and_cannot_see_the_host() {
    let _serial = SERIAL.lock().await;
    let jail = ShellJail::new(settings(&["/bin/sh"])).unwrap();
    let out = sh(
        &jail,
        "echo $$; ls /proc | grep -c '^[0-9]'; tr '\\0' ' ' < /proc/1/cmdline; echo",
    )
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("1"), "{stdout}");
    let visible: u32 = lines.next().unwrap().parse().unwrap();
    assert!(visible <= 4, "the jail sees {visible} processes: {stdout}");
    // pid 1 is the program itself, not the host's init.
    assert!(
        lines.next().unwrap().starts_with("/usr/bin/dash -c echo"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_working_directory_is_fresh_empty_and_removed() {
    let _serial = SERIAL.lock().await;
    let jail = ShellJail::new(settings(&["/bin/sh"])).unwrap();
    let out = sh(&jail, "pwd; ls -A | wc -l; echo data > f && cat f")
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.get(1..), Some(&["0", "data"][..]), "{out:?}");
    let dir = PathBuf::from(lines[0]);
    assert!(dir.starts_with(std::env::temp_dir()), "{stdout}");
    assert!(!dir.exists(), "the working directory was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_fed_to_the_program() {
    let _serial = SERIAL.lock().await;
    let jail = ShellJail::new(settings(&["/bin/cat"])).unwrap();
    let mut r = req("/bin/cat", &[]);
    r.stdin = Some("line one\nline two\n".to_owned());
    let out = jail.exec(&r).await.unwrap();
    assert_eq!(text(&out.stdout), "line one\nline two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_stopped_and_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/bin/sh"]);
    s.limits.processes = 16;
    s.limits.timeout = Duration::from_secs(3);
    let jail = ShellJail::new(s).unwrap();
    let started = Instant::now();
    // pid 1 stays alive (its death would end the namespace and hide the bomb).
    let out = sh(&jail, "f() { f | f & }; f; while :; do sleep 1; done")
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}");
    // The process limit stopped the growth (the shells report it); the jail
    // ended either at the timeout or when pid 1 itself failed to fork
    // (dash exits 2), which ends the whole namespace.
    assert!(
        matches!(
            out.status,
            ExitStatus::TimedOut | ExitStatus::Exit { code: 2 }
        ),
        "{out:?}"
    );
    assert!(text(&out.stderr).contains("Cannot fork"), "{out:?}");
    assert_no_jail_processes_left().await;
    // The node can still start processes.
    let after = tokio::process::Command::new("/bin/true")
        .status()
        .await
        .unwrap();
    assert!(after.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_limit_holds_inside_the_jail() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/bin/sh"]);
    s.limits.processes = 8;
    let jail = ShellJail::new(s).unwrap();
    // Twenty sleeping children cannot all start under a limit of eight.
    let out = sh(
        &jail,
        "i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; \
         echo started; kill $(jobs -p) 2>/dev/null; exit 0",
    )
    .await
    .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("fork") || stderr.contains("esource"),
        "no fork failure reported: {out:?}"
    );
    assert_no_jail_processes_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_stopped_by_the_address_space_limit() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/bin/sh"]);
    s.limits.memory_bytes = 64 * 1024 * 1024;
    let jail = ShellJail::new(s).unwrap();
    let started = Instant::now();
    let out = sh(&jail, "x=aaaaaaaa; while :; do x=\"$x$x\"; done")
        .await
        .unwrap();
    assert_ne!(out.status, ExitStatus::TimedOut, "{out:?}");
    assert_ne!(out.status, ExitStatus::Exit { code: 0 }, "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(9));
    assert_no_jail_processes_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_loop_is_stopped_by_the_cpu_limit() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/bin/sh"]);
    s.limits.cpu_secs = 1;
    s.limits.timeout = Duration::from_secs(15);
    let jail = ShellJail::new(s).unwrap();
    let started = Instant::now();
    let out = sh(&jail, "while :; do :; done").await.unwrap();
    // Long before the timeout: one CPU second (the machine is shared).
    assert!(started.elapsed() < Duration::from_secs(12), "{out:?}");
    assert_ne!(out.status, ExitStatus::TimedOut, "{out:?}");
    assert_ne!(out.status, ExitStatus::Exit { code: 0 }, "{out:?}");
    assert_no_jail_processes_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_kills_the_whole_jail() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/bin/sh"]);
    s.limits.timeout = Duration::from_secs(1);
    let jail = ShellJail::new(s).unwrap();
    let started = Instant::now();
    let out = sh(&jail, "sleep 600 & sleep 600 & echo begun; wait")
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status, ExitStatus::TimedOut);
    assert_eq!(text(&out.stdout), "begun\n");
    assert_no_jail_processes_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_and_flagged_promptly() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/usr/bin/head", "/bin/sh"]);
    s.limits.max_stdout = 1000;
    s.limits.max_stderr = 100;
    let jail = ShellJail::new(s).unwrap();
    let started = Instant::now();
    let out = jail
        .exec(&req("/usr/bin/head", &["-c", "10000000", "/dev/zero"]))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status, ExitStatus::Exit { code: 0 });
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout_truncated);
    assert!(!out.stderr_truncated);

    let out = sh(&jail, "head -c 5000 /dev/zero >&2; echo short")
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), "short\n");
    assert!(!out.stdout_truncated);
    assert_eq!(out.stderr.len(), 100);
    assert!(out.stderr_truncated);

    let exact = sh(&jail, "head -c 1000 /dev/zero").await.unwrap();
    assert_eq!(exact.stdout.len(), 1000);
    assert!(!exact.stdout_truncated, "exactly the cap is not truncated");
}

#[test]
fn requests_are_read_from_json() {
    let r = ShellRequest::from_json(&serde_json::json!({
        "program": "/bin/echo", "args": ["a", "b"], "env": ["LANG"], "stdin": "in"
    }))
    .unwrap();
    assert_eq!(r.program, "/bin/echo");
    assert_eq!(r.args, ["a", "b"]);
    assert_eq!(r.env, ["LANG"]);
    assert_eq!(r.stdin.as_deref(), Some("in"));
    let minimal = ShellRequest::from_json(&serde_json::json!({"program": "/bin/true"})).unwrap();
    assert!(minimal.args.is_empty() && minimal.env.is_empty() && minimal.stdin.is_none());
    for bad in [
        serde_json::json!("/bin/echo a"),
        serde_json::json!({"args": []}),
        serde_json::json!({"program": "/bin/echo", "args": "a b"}),
        serde_json::json!({"program": "/bin/echo", "args": [1]}),
        serde_json::json!({"program": "/bin/echo", "shell": true}),
    ] {
        assert!(
            matches!(
                ShellRequest::from_json(&bad),
                Err(ShellError::BadRequest { .. })
            ),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_kills_the_jail() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/bin/sh"]);
    s.limits.timeout = Duration::from_secs(60);
    let jail = ShellJail::new(s).unwrap();
    let script = "sleep 600 & sleep 600 & echo begun; wait";
    let mut run = Box::pin(sh(&jail, script));
    if am_root() {
        // Wait until the jail's processes are really there (unshare, the
        // shell and its two sleeps), then drop the run.
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_of(JAIL_UID).len() < 4 {
            tokio::select! {
                ended = &mut run => panic!("the run ended by itself: {ended:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            assert!(
                Instant::now() < deadline,
                "the jail's processes never appeared"
            );
        }
        drop(run);
        assert_no_jail_processes_left().await;
    } else {
        let cancelled = tokio::time::timeout(Duration::from_millis(500), run).await;
        assert!(cancelled.is_err(), "the run ended by itself: {cancelled:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_rlimits_are_the_programs_limits() {
    let _serial = SERIAL.lock().await;
    let mut s = settings(&["/bin/cat"]);
    s.limits.cpu_secs = 7;
    s.limits.memory_bytes = 300_000_000;
    s.limits.open_files = 33;
    s.limits.processes = 21;
    let jail = ShellJail::new(s).unwrap();
    let out = jail
        .exec(&req("/bin/cat", &["/proc/self/limits"]))
        .await
        .unwrap();
    let limits = text(&out.stdout);
    let row = |name: &str| -> Vec<String> {
        let line = limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {limits}"));
        line[name.len()..]
            .split_whitespace()
            .take(2)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("Max cpu time"), ["7", "7"]);
    assert_eq!(row("Max address space"), ["300000000", "300000000"]);
    assert_eq!(row("Max open files"), ["33", "33"]);
    assert_eq!(row("Max processes"), ["21", "21"]);
}
