//! http.fetch ignores proxy environment variables. Environment variables
//! are process-wide (and setting them needs `unsafe` in edition 2024), so
//! the fetches run in a child process of this test binary whose
//! environment points every proxy variable at a counting sink.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use mxp_broker::addr::AddrClass;
use mxp_broker::http::{FetchRequest, HostRule, HttpFetcher, HttpSettings, StaticResolver};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const CHILD: &str = "MXP_HTTP_NO_PROXY_CHILD_PORT";

#[tokio::test]
async fn proxy_environment_is_ignored() {
    let direct = common::sink().await;
    let proxy = common::sink().await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port());
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "child_fetches",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, direct.port().to_string())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        child.env(var, &proxy_url);
    }
    let out = tokio::time::timeout(Duration::from_secs(15), child.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "the child test ran: {stdout}");
    assert_eq!(
        direct.accepted(),
        1,
        "http.fetch went straight to the server"
    );
    // The control: a client that honours the environment went to the proxy.
    assert_eq!(
        proxy.accepted(),
        1,
        "only the bare reqwest client used the proxy"
    );
}

/// Runs only as the child of `proxy_environment_is_ignored`.
#[tokio::test]
async fn child_fetches() {
    let Ok(port) = std::env::var(CHILD) else {
        return;
    };
    let port: u16 = port.parse().unwrap();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let f = HttpFetcher::new(
        HttpSettings {
            allow: vec![HostRule {
                host: "direct.test".into(),
                port: Some(port),
            }],
            allowed_classes: vec![AddrClass::Loopback],
            ..HttpSettings::default()
        },
        StaticResolver::new().with("direct.test", &[loopback]),
    )
    .unwrap();
    let req = FetchRequest::from_json(&serde_json::json!({
        "url": format!("http://direct.test:{port}/")
    }))
    .unwrap();
    let r = f.fetch(req).await.unwrap();
    assert_eq!(r.body, "ok");

    // Control: reqwest as configured by default reads the proxy variables.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let bare = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap();
    let r = bare
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
