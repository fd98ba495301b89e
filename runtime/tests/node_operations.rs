//! What an operator meets around `mxp-node`, each against a real child
//! process: a private data folder even under `umask 000`, a key file others
//! may read refused at start, a taken port naming its setting, and the
//! `/healthz`, `/readyz` and `/metrics` endpoints with their bounds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_mxp-node");
const DEADLINE: Duration = Duration::from_secs(30);

/// A running `mxp-node` child; its stdout and stderr lines as they come.
struct Running {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    out: Vec<String>,
    err: Vec<String>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((true, l)).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx2.send((false, l)).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    fn take(&mut self, (is_out, l): (bool, String)) {
        if is_out {
            self.out.push(l);
        } else {
            self.err.push(l);
        }
    }

    /// The first stdout line starting with `prefix`, waiting up to [`DEADLINE`].
    fn line(&mut self, prefix: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(l) = self.out.iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(l) => self.take(l),
                Err(_) => panic!(
                    "no line starting with {prefix:?}; stdout {:?}, stderr {:?}",
                    self.out, self.err
                ),
            }
        }
    }

    /// Waits for the child to exit on its own (up to [`DEADLINE`]): its exit
    /// code and everything it printed on stderr.
    fn exit(mut self) -> (i32, String) {
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < end,
                "mxp-node did not exit; stdout {:?}, stderr {:?}",
                self.out,
                self.err
            );
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.take(l);
            }
        };
        // Both pipes close at exit: drain them to the end.
        while let Ok(l) = self.lines.recv_timeout(DEADLINE) {
            self.take(l);
        }
        (status.code().unwrap_or(-1), self.err.join("\n"))
    }

    fn terminate(self) -> (i32, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.exit()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mxp-node` on loopback with any free QUIC port, `data` as data folder
/// and `metrics` as metrics.listen.
fn node(data: &Path, metrics: &str) -> Command {
    let mut cmd = Command::new(BIN);
    settings(&mut cmd, data, metrics);
    cmd
}

fn settings(cmd: &mut Command, data: &Path, metrics: &str) {
    cmd.env("MXP_NODE__LISTEN", "127.0.0.1:0")
        .env("MXP_NODE__DATA_DIR", data)
        .env("MXP_METRICS__LISTEN", metrics)
        .env("RUST_LOG", "warn");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn under_umask_000_the_data_folder_and_key_are_still_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("parent").join("mxp-data");
    // The real binary, as a shell with umask 000 starts it.
    let mut sh = Command::new("sh");
    sh.arg("-c").arg("umask 000 && exec \"$0\"").arg(BIN);
    settings(&mut sh, &data, "");
    let mut running = Running::spawn(sh);
    running.line("node fingerprint: ");
    // What the umask would have made 0777 / 0666.
    assert_eq!(format!("{:o}", mode(&dir.path().join("parent"))), "700");
    assert_eq!(format!("{:o}", mode(&data)), "700");
    assert_eq!(format!("{:o}", mode(&data.join("identity"))), "700");
    assert_eq!(
        format!("{:o}", mode(&data.join("identity").join("key.der"))),
        "600"
    );
    assert_eq!(
        format!("{:o}", mode(&data.join("identity").join("cert.der"))),
        "644"
    );
    let (code, err) = running.terminate();
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("mode"), "no warning expected: {err}");
}

#[test]
fn a_key_file_others_may_read_is_refused_at_start_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mxp-data");
    let mut first = Running::spawn(node(&data, ""));
    first.line("node fingerprint: ");
    assert_eq!(first.terminate().0, 0);
    let key = data.join("identity").join("key.der");
    chmod(&key, 0o644);

    let (code, err) = Running::spawn(node(&data, "")).exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert!(err.contains("0644"), "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );

    // The fix it names works.
    chmod(&key, 0o600);
    let mut ok = Running::spawn(node(&data, ""));
    ok.line("node fingerprint: ");
    assert_eq!(ok.terminate().0, 0);
}

#[test]
fn a_loose_data_folder_is_a_warning_or_refused_when_others_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mxp-data");
    std::fs::create_dir(&data).unwrap();

    chmod(&data, 0o755);
    let mut listed = Running::spawn(node(&data, ""));
    listed.line("node fingerprint: ");
    let (code, err) = listed.terminate();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0755"), "{err}");
    assert!(
        err.contains(&format!("chmod 700 {}", data.display())),
        "{err}"
    );

    chmod(&data, 0o777);
    let (code, err) = Running::spawn(node(&data, "")).exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("0777"), "{err}");
    assert!(
        err.contains(&format!("chmod 700 {}", data.display())),
        "{err}"
    );

    chmod(&data, 0o700);
    chmod(&data.join("identity"), 0o770);
    let (code, err) = Running::spawn(node(&data, "")).exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("0770"), "{err}");
    assert!(
        err.contains(&format!("chmod 700 {}", data.join("identity").display())),
        "{err}"
    );
}

#[test]
fn a_taken_port_exits_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (code, err) = Running::spawn(node(&dir.path().join("a"), &addr.to_string())).exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("metrics.listen = {addr}")), "{err}");
    assert!(err.contains("MXP_METRICS__LISTEN"), "{err}");

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let mut cmd = node(&dir.path().join("b"), "");
    cmd.env("MXP_NODE__LISTEN", addr.to_string());
    let (code, err) = Running::spawn(cmd).exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("node.listen = {addr}")), "{err}");
    assert!(err.contains("MXP_NODE__LISTEN"), "{err}");
    drop((taken, udp));
}

#[test]
fn a_misspelled_variable_is_warned_about_with_the_right_spelling() {
    let mut cmd = Command::new(BIN);
    cmd.arg("--check")
        .env("RUST_LOG", "warn")
        .env("MXP_NODE_LISTEN", "127.0.0.1:9001")
        .env("MXP_CONFIG_DIR", "/nowhere");
    let (code, err) = Running::spawn(cmd).exit();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("MXP_NODE_LISTEN"), "{err}");
    assert!(err.contains("did you mean MXP_NODE__LISTEN?"), "{err}");
    assert!(!err.contains("MXP_CONFIG_DIR"), "{err}");
}

/// One HTTP/1.1 exchange on a fresh connection: (status code, head, body).
fn http(port: u16, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {resp:?}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (code, head.to_owned(), body.to_owned())
}

fn get(port: u16, path: &str) -> (u16, String, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

/// The value of the sample line `series` in Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .parse()
        .unwrap()
}

#[test]
fn health_readiness_and_metrics_beside_each_other_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0: the line printed gives the port really bound.
    let mut running = Running::spawn(node(&dir.path().join("d"), "127.0.0.1:0"));
    let line = running.line("metrics: http://");
    let port: u16 = line
        .strip_prefix("metrics: http://127.0.0.1:")
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert_ne!(port, 0);
    running.line("try: mxp call ");

    let (code, _, body) = get(port, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // Ready is set right after the lines are printed: wait for it.
    let end = Instant::now() + DEADLINE;
    loop {
        let (code, _, body) = get(port, "/readyz");
        if code == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        // 429: polled faster than the listener's rate.
        assert!(
            (code, body.as_str()) == (503, "starting\n") || code == 429,
            "{code} {body}"
        );
        assert!(Instant::now() < end, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, head, text) = get(port, "/metrics");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&text, &format!("mxp_build_info{{version=\"{version}\"}}")),
        1.0
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    assert!(sample(&text, "process_cpu_seconds_total") >= 0.0);
    assert!(sample(&text, "process_resident_memory_bytes") > 1e6);
    assert!(sample(&text, "process_open_fds") >= 3.0);
    let start = sample(&text, "process_start_time_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "{start} vs {now}"
    );

    // Only GET; unknown paths 404.
    let (code, head, _) = http(
        port,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405, "{head}");
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    assert_eq!(get(port, "/").0, 404);

    // A request head past 8 KiB is refused, not buffered.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = s.write_all(big.as_bytes());
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 431"),
        "{resp}"
    );

    // 32 connections at once: one more is closed without an answer.
    let held: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // The server has taken them all once a 33rd is closed on it.
    let end = Instant::now() + DEADLINE;
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        if resp.is_empty() {
            break;
        }
        // Answered: an earlier held connection was not accepted yet.
        assert!(Instant::now() < end, "never refused a 33rd connection");
    }
    for s in &held {
        let _ = s.shutdown(Shutdown::Both);
    }
    drop(held);
    let end = Instant::now() + DEADLINE;
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        if resp.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < end, "slots never freed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Requests past the listener's rate are answered 429 with Retry-After.
    let mut limited = None;
    for _ in 0..200 {
        let (code, head, _) = get(port, "/healthz");
        if code == 429 {
            limited = Some(head);
            break;
        }
        assert_eq!(code, 200, "{head}");
    }
    let head = limited.expect("200 requests in a row were never rate limited");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );

    let (code, err) = running.terminate();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_cli_identity_is_private_under_umask_000_and_a_readable_key_is_refused() {
    const MXP: &str = env!("CARGO_BIN_EXE_mxp");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let folder = config.join("identity");
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("umask 000 && exec \"$0\" identity")
        .arg(MXP)
        .env("MXP_CONFIG_DIR", &config);
    let (code, err) = Running::spawn(sh).exit();
    assert_eq!(code, 0, "{err}");
    assert_eq!(format!("{:o}", mode(&config)), "700");
    assert_eq!(format!("{:o}", mode(&folder)), "700");
    assert_eq!(format!("{:o}", mode(&folder.join("key.der"))), "600");
    assert_eq!(format!("{:o}", mode(&folder.join("cert.der"))), "644");

    // A folder others may list: a warning on stderr, the command works.
    chmod(&folder, 0o755);
    let mut cmd = Command::new(MXP);
    cmd.arg("identity").env("MXP_CONFIG_DIR", &config);
    let (code, err) = Running::spawn(cmd).exit();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("mxp: warning: ") && err.contains("0755"),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod 700 {}", folder.display())),
        "{err}"
    );
    chmod(&folder, 0o700);

    let key = folder.join("key.der");
    chmod(&key, 0o644);
    let mut cmd = Command::new(MXP);
    cmd.arg("identity").env("MXP_CONFIG_DIR", &config);
    let (code, err) = Running::spawn(cmd).exit();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("0644"), "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
}
