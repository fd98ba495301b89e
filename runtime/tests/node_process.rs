//! `mxp-node` as an operator runs it: a real child process on loopback,
//! answering Calls, serving /metrics, stopping cleanly on SIGTERM, and
//! refusing a bad configuration with the key named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mxp_protocol::CallBody;
use mxp_transport::{Client, Limits, MxpUrl, NodeIdentity, PeerTrust};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_mxp-node");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(data: &Path, metrics_port: u16) -> Running {
        let mut child = Command::new(BIN)
            .env("MXP_NODE__LISTEN", "127.0.0.1:0")
            .env("MXP_NODE__DATA_DIR", data)
            .env("MXP_METRICS__LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stdout line starting with `prefix`, waiting up to 30 s.
    fn line(&mut self, prefix: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => panic!("no line starting with {prefix:?}; saw {:?}", self.seen),
            }
        }
    }

    fn terminate(mut self) -> (i32, Vec<String>) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let end = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "mxp-node did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (status.code().unwrap_or(-1), std::mem::take(&mut self.seen))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET /metrics over a plain TCP socket; the body.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Parses Prometheus text: `name{labels}` → value. Every sample line must parse.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        // The node's own metrics, and the standard process metrics.
        assert!(
            name.starts_with("mxp_") || name.starts_with("process_"),
            "metric without the mxp_ or process_ prefix: {line:?}"
        );
        out.insert(series.to_owned(), value);
    }
    out
}

fn call_url(line: &str) -> MxpUrl {
    // try: mxp call mxp://127.0.0.1:PORT/ID '{...}'
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn node_serves_calls_and_metrics_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let mut node = Running::start(data.path(), metrics_port);
    let url = call_url(&node.line("try: mxp call "));
    let fingerprint = node.line("node fingerprint: ");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(
            &NodeIdentity::generate().unwrap(),
            PeerTrust::AnyIdentified,
            Limits::default(),
        )
        .unwrap();
        for i in 0..5 {
            let r = client
                .call(
                    &url,
                    &CallBody::new("echo", json!({"i": i})),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            assert_eq!(r.parse_body().unwrap().result, json!({"i": i}));
        }
        let err = client
            .call(
                &url,
                &CallBody::new("nope", json!(null)),
                Duration::from_secs(10),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code().name(), "unsupported");
    });

    // Gauges are refreshed on the node's tick; wait for them rather than sleeping.
    let end = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let m = parse_prometheus(&scrape(metrics_port));
        if m.get("mxp_agents{status=\"active\"}") == Some(&1.0) || Instant::now() > end {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics["mxp_frames_in_total{type=\"Call\"}"] >= 6.0,
        "{metrics:?}"
    );
    assert!(metrics["mxp_frames_out_total{type=\"Response\"}"] >= 5.0);
    assert!(metrics["mxp_calls_total{outcome=\"ok\"}"] >= 5.0);
    assert!(metrics["mxp_calls_total{outcome=\"unsupported\"}"] >= 1.0);
    assert!(metrics["mxp_call_duration_seconds_count"] >= 6.0);
    assert!(
        metrics
            .keys()
            .any(|k| k.starts_with("mxp_call_duration_seconds_bucket{le="))
    );
    assert_eq!(metrics["mxp_agents{status=\"active\"}"], 1.0);
    assert!(metrics.contains_key("mxp_quic_connections"));
    assert_eq!(
        metrics[&format!(
            "mxp_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )],
        1.0
    );
    assert!(metrics["process_resident_memory_bytes"] > 0.0);
    assert!(
        !metrics
            .keys()
            .any(|k| k.contains(&url.agent().unwrap().to_string())),
        "ids must not be labels"
    );

    let (code, out) = node.terminate();
    assert_eq!(code, 0, "{out:?}");
    assert!(out.iter().any(|l| l == "stopped"), "{out:?}");

    // Restarted on the same data folder: same identity, same demo agent id.
    let mut again = Running::start(data.path(), free_port());
    assert_eq!(again.line("node fingerprint: "), fingerprint);
    assert_eq!(call_url(&again.line("try: mxp call ")).agent(), url.agent());
    let (code, _) = again.terminate();
    assert_eq!(code, 0);
}

#[test]
fn invalid_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("node.toml");
    std::fs::write(&bad, "[transport]\nmax_connections = \"many\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("transport.max_connections"), "{err}");

    let out = Command::new(BIN)
        .arg("--check")
        .env("MXP_NODE__AGENT_TTL_MS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node.agent_ttl_ms"));

    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn printed_default_config_is_valid_and_complete() {
    let out = Command::new(BIN)
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "listen",
        "data_dir",
        "seeds",
        "max_connections",
        "max_restarts",
        "[[agents]]",
    ] {
        assert!(text.contains(key), "{key} missing from the default config");
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--print-default-config") && help.contains("MXP_"),
        "{help}"
    );
}

/// A data folder whose `store` holds a sled store from before redb (the
/// fixture sled 0.34 wrote) and no `store.redb`: the node exits 2 naming the
/// folder and what to do, and leaves every file as it was.
#[test]
fn a_data_folder_with_an_old_sled_store_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("store");
    std::fs::create_dir_all(store.join("blobs")).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../actors/tests/fixtures/sled-0.34-store");
    let mut before = Vec::new();
    for name in ["conf", "db"] {
        let bytes = std::fs::read(fixture.join(name)).unwrap();
        std::fs::write(store.join(name), &bytes).unwrap();
        before.push((name, bytes));
    }
    let mut child = Command::new(BIN)
        .env("MXP_NODE__LISTEN", "127.0.0.1:0")
        .env("MXP_NODE__DATA_DIR", data.path())
        .env("MXP_METRICS__LISTEN", "")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    // stderr ends when the node exits.
    let Ok(err) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("mxp-node did not refuse the sled store within 60 s");
    };
    assert_eq!(child.wait().unwrap().code(), Some(2), "{err}");
    for says in [
        store.display().to_string().as_str(),
        "sled 0.34",
        "no store.redb",
        "Move the folder aside",
    ] {
        assert!(err.contains(says), "{says:?} not in: {err}");
    }
    for (name, bytes) in before {
        assert_eq!(std::fs::read(store.join(name)).unwrap(), bytes, "{name}");
    }
    let mut names: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["blobs", "conf", "db"], "nothing created beside it");
}
